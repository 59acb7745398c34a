//! The mapping engine: partner jq compiled once per connector version, run per record in a
//! sandbox, every result validated against its unified schema.
//!
//! **The sandbox.** jaq has no fuel, time, memory or depth limits of its own, so a program
//! is contained by construction and by budget:
//! - it sees only the definitions and natives given here: no `env`/`$ENV`, `input(s)`,
//!   `halt`, `debug`, `stderr`, `now`, local time; no unbounded generators (`repeat`,
//!   `while`, `until`, `recurse(f)`), and a `range` that draws from a per-run budget;
//! - it is at most [`MAX_PROGRAM_BYTES`], nests at most [`MAX_NESTING`] brackets, defines
//!   nothing recursive, and imports nothing;
//! - it is parsed and compiled on a thread with a large stack (the size cap bounds the
//!   parser's depth), and run with a deadline checked between outputs, a cap on the number
//!   and size of outputs. An overrun is [`ConnectorError::MappingOverrun`], which callers
//!   use to quarantine the connector version.
//!
//! What no in-process check can bound (a single output that never finishes, or allocates
//! without limit) is what the child-process dry-run exists for: candidate programs run
//! there, under rlimits, before they are ever activated.

mod convert;
mod dry_run;
mod finish;
pub mod isolated;
mod natives;
mod page;
mod pool;

use std::collections::HashSet;
use std::time::Instant;

use jaq_core::data::JustLut;
use jaq_core::load::parse::{Def, Term};
use jaq_core::load::{Arena, File, Loader};
use jaq_core::{Compiler, Ctx, Vars};
use jaq_json::Val;

pub use convert::{to_json, to_val};
pub(crate) use dry_run::rebuild as rebuild_error;
pub use dry_run::{ChildReply, DryRunOutput, DryRunRequest, Sandbox, SandboxLimits, child_main};
pub use finish::{Identity, RawPage, RawRecord, drop_reason, finish_page, strip_nulls};
pub use natives::RANGE_BUDGET;
pub use page::{
    CapabilityMapping, CompiledCapability, ConnectorPrograms, Globals, INLINE_REPLY_BYTES,
    MAX_RECORD_BYTES, MAX_RECORDS_PER_REPLY, MappedPage,
};
pub use pool::{ABANDON_AFTER, MappingPool, PoolStats};

use crate::error::ConnectorError;

pub(crate) type D = JustLut<Val>;

/// Largest jq program accepted, in bytes.
pub const MAX_PROGRAM_BYTES: usize = 32 * 1024;
/// Deepest bracket nesting accepted in a program.
pub const MAX_NESTING: usize = 64;
/// Stack of the threads that parse, compile and run programs.
pub const STACK_BYTES: usize = 256 * 1024 * 1024;

thread_local! {
    /// Set on threads started with [`STACK_BYTES`] of stack (a sandbox worker's): programs
    /// compile there directly, without a thread (and a second stack reservation) of their
    /// own.
    static ON_BIG_STACK: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Marks the calling thread as started with [`STACK_BYTES`] of stack.
pub(crate) fn on_big_stack() {
    ON_BIG_STACK.with(|b| b.set(true));
}

/// Global variables every program may read.
pub const GLOBALS: [&str; 3] = ["$provenance", "$query", "$locations"];

/// Standard definitions a partner program may not use (name, arity).
const DENIED_DEFS: &[(&str, usize)] = &[
    ("debug", 0),
    ("debug", 1),
    ("stderr", 0),
    ("halt", 0),
    ("halt_error", 0),
    ("halt_error", 1),
    ("repeat", 1),
    ("while", 2),
    ("until", 2),
    ("recurse", 0),
    ("recurse", 1),
    ("recurse", 2),
    ("range", 1),
    ("range", 2),
];

/// Standard natives a partner program may not use.
const DENIED_FUNS: &[&str] = &[
    "debug_empty",
    "stderr_empty",
    "halt",
    "env",
    "now",
    "localtime",
    "strflocaltime",
    "mktime",
    "range",
];

/// Trusted replacements, written by us (so they may recurse).
const SANDBOX_DEFS: &str = r#"
def range($upto): range(0; $upto);
def recurse: def r: ., (.[]? | r); r;
def each: if type == "array" then .[] else . end;
def flatten: flatten(1000);
def transpose: [range(0; map(length) | max // 0) as $i | [.[][$i]]];
"#;

fn sandbox_defs() -> impl Iterator<Item = Def<&'static str>> {
    jaq_core::load::parse(SANDBOX_DEFS, |p| p.defs())
        .unwrap_or_default()
        .into_iter()
}

/// Per-run limits.
#[derive(Debug, Clone, Copy)]
pub struct Budget {
    pub deadline: Instant,
    pub max_outputs: usize,
    pub max_output_bytes: usize,
}

impl Budget {
    pub fn until(deadline: Instant) -> Self {
        Self {
            deadline,
            max_outputs: 10_000,
            max_output_bytes: 4 * 1024 * 1024,
        }
    }
}

/// A compiled jq program, shareable across threads.
pub struct Program {
    filter: jaq_core::Filter<D>,
}

impl std::fmt::Debug for Program {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Program")
    }
}

fn line_column(code: &str, offset: usize) -> (usize, usize) {
    let before = &code[..offset.min(code.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

fn invalid(reason: impl Into<String>) -> ConnectorError {
    ConnectorError::InvalidProgram {
        reason: reason.into(),
    }
}

/// Deepest nesting of `(`, `[`, `{` (counted everywhere: conservative).
fn nesting(code: &str) -> usize {
    let mut depth = 0usize;
    let mut max = 0usize;
    for b in code.bytes() {
        match b {
            b'(' | b'[' | b'{' => {
                depth += 1;
                max = max.max(depth);
            }
            b')' | b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    max
}

/// Visits every sub-term.
fn walk<'s>(term: &Term<&'s str>, f: &mut dyn FnMut(&Term<&'s str>)) {
    f(term);
    children(term, &mut |child| walk(child, f));
}

/// Visits the direct sub-terms of `term`.
fn children<'s>(term: &Term<&'s str>, f: &mut dyn FnMut(&Term<&'s str>)) {
    use jaq_core::load::lex::StrPart;
    match term {
        Term::Id | Term::Recurse | Term::Num(_) | Term::Break(_) | Term::Var(_) => {}
        Term::Str(_, parts) => {
            for part in parts {
                if let StrPart::Term(t) = part {
                    f(t);
                }
            }
        }
        Term::Arr(inner) => {
            if let Some(t) = inner {
                f(t);
            }
        }
        Term::Obj(members) => {
            for (k, v) in members {
                f(k);
                if let Some(v) = v {
                    f(v);
                }
            }
        }
        Term::Neg(t) | Term::Label(_, t) => f(t),
        Term::BinOp(l, _, r) => {
            f(l);
            f(r);
        }
        Term::Fold(_, x, _, args) => {
            f(x);
            for a in args {
                f(a);
            }
        }
        Term::TryCatch(t, c) => {
            f(t);
            if let Some(c) = c {
                f(c);
            }
        }
        Term::IfThenElse(branches, otherwise) => {
            for (c, t) in branches {
                f(c);
                f(t);
            }
            if let Some(o) = otherwise {
                f(o);
            }
        }
        Term::Def(defs, t) => {
            for def in defs {
                f(&def.body);
            }
            f(t);
        }
        Term::Call(_, args) => {
            for a in args {
                f(a);
            }
        }
        Term::Path(t, path) => {
            f(t);
            for (part, _) in path.0.iter() {
                use jaq_core::path::Part;
                match part {
                    Part::Index(i) => f(i),
                    Part::Range(a, b) => {
                        if let Some(a) = a {
                            f(a);
                        }
                        if let Some(b) = b {
                            f(b);
                        }
                    }
                }
            }
        }
    }
}

/// A name in scope while resolving calls: a definition (with its arity and id) or a filter
/// parameter (which shadows a definition of arity 0).
enum Binding<'s> {
    Def(&'s str, usize, usize),
    Param(&'s str),
}

/// The user definitions met so far (by id) and the definitions each one calls.
#[derive(Default)]
struct CallGraph<'s> {
    names: Vec<&'s str>,
    calls: Vec<HashSet<usize>>,
}

impl<'s> CallGraph<'s> {
    /// Resolves every call in `term` to the definition jq would call (nearest in scope,
    /// same name and arity; a definition sees itself and the ones before it), recording
    /// an edge from `caller`.
    fn resolve(&mut self, term: &Term<&'s str>, env: &mut Vec<Binding<'s>>, caller: Option<usize>) {
        match term {
            Term::Def(defs, rest) => {
                let mark = env.len();
                for def in defs {
                    let id = self.names.len();
                    self.names.push(def.name);
                    self.calls.push(HashSet::new());
                    env.push(Binding::Def(def.name, def.args.len(), id));
                    let inner = env.len();
                    env.extend(
                        def.args
                            .iter()
                            .filter(|a| !a.starts_with('$'))
                            .map(|a| Binding::Param(a)),
                    );
                    self.resolve(&def.body, env, Some(id));
                    env.truncate(inner);
                }
                self.resolve(rest, env, caller);
                env.truncate(mark);
            }
            Term::Call(name, args) => {
                let target = env.iter().rev().find_map(|b| match b {
                    Binding::Param(p) if p == name && args.is_empty() => Some(None),
                    Binding::Def(n, arity, id) if n == name && *arity == args.len() => {
                        Some(Some(*id))
                    }
                    _ => None,
                });
                if let (Some(from), Some(Some(to))) = (caller, target) {
                    self.calls[from].insert(to);
                }
                for arg in args {
                    self.resolve(arg, env, caller);
                }
            }
            other => children(other, &mut |child| self.resolve(child, env, caller)),
        }
    }

    /// The first definition that can reach itself, if any.
    fn recursive(&self) -> Option<&'s str> {
        for start in 0..self.names.len() {
            let mut stack: Vec<usize> = self.calls[start].iter().copied().collect();
            let mut seen = HashSet::new();
            while let Some(id) = stack.pop() {
                if id == start {
                    return Some(self.names[start]);
                }
                if seen.insert(id) {
                    stack.extend(self.calls[id].iter().copied());
                }
            }
        }
        None
    }
}

/// The first user definition in `term` that can reach itself, if any.
fn recursive_def<'s>(term: &Term<&'s str>) -> Option<&'s str> {
    let mut graph = CallGraph::default();
    graph.resolve(term, &mut Vec::new(), None);
    graph.recursive()
}

/// The standard definitions minus the denied ones and every definition that (through
/// others) calls a denied definition or native.
fn allowed_std_defs() -> Vec<Def<&'static str>> {
    let mut defs: Vec<Def<&'static str>> = jaq_core::defs()
        .chain(jaq_std::defs())
        .chain(jaq_json::defs())
        .collect();
    let mut denied: HashSet<(&str, usize)> = DENIED_DEFS.iter().copied().collect();
    loop {
        let before = defs.len();
        defs.retain(|def| {
            if denied.contains(&(def.name, def.args.len())) {
                return false;
            }
            let mut ok = true;
            walk(&def.body, &mut |t| {
                if let Term::Call(name, args) = t
                    && (denied.contains(&(*name, args.len())) || DENIED_FUNS.contains(name))
                {
                    ok = false;
                }
            });
            if !ok {
                denied.insert((def.name, def.args.len()));
            }
            ok
        });
        if defs.len() == before {
            return defs;
        }
    }
}

/// A program's source: the connector's shared `definitions` (if any) followed by the
/// program itself, compiled as one text. Errors are located in the part they are in.
#[derive(Clone, Copy)]
struct Source<'a> {
    /// The whole text compiled.
    code: &'a str,
    /// How many leading bytes of `code` are the shared definitions (with their newline).
    defs_len: usize,
}

impl Source<'_> {
    /// "line L, column C" in the program, or "definitions line L, column C".
    fn locate(&self, offset: usize) -> String {
        if offset < self.defs_len {
            let (l, c) = line_column(&self.code[..self.defs_len], offset);
            format!("definitions line {l}, column {c}")
        } else {
            let (l, c) = line_column(&self.code[self.defs_len..], offset - self.defs_len);
            format!("line {l}, column {c}")
        }
    }

    fn locate_part(&self, part: &str) -> String {
        self.locate(jaq_core::load::span(self.code, part).start)
    }
}

fn compile_on_this_thread(source: Source<'_>) -> Result<jaq_core::Filter<D>, ConnectorError> {
    let code = source.code;
    // Recursion check on the program's own syntax tree.
    let term = jaq_core::load::parse(code, |p| p.term());
    if let Some(term) = &term
        && let Some(name) = recursive_def(term)
    {
        return Err(invalid(format!(
            "recursive definition `{name}` is not allowed"
        )));
    }
    let checked = term.is_some();

    let defs = allowed_std_defs().into_iter().chain(sandbox_defs());
    let arena = Arena::default();
    let modules = Loader::new(defs)
        .load(&arena, File { code, path: () })
        .map_err(|errors| {
            let mut reasons = Vec::new();
            for (_, e) in errors {
                match e {
                    jaq_core::load::Error::Io(items) => {
                        reasons.extend(
                            items
                                .into_iter()
                                .map(|(path, _)| format!("imports are not allowed (`{path}`)")),
                        );
                    }
                    jaq_core::load::Error::Lex(items) => {
                        reasons.extend(items.into_iter().map(|(expect, at)| {
                            format!("{}: expected {}", source.locate_part(at), expect.as_str())
                        }));
                    }
                    jaq_core::load::Error::Parse(items) => {
                        reasons.extend(items.into_iter().map(|(expect, at)| {
                            format!("{}: expected {}", source.locate_part(at), expect.as_str())
                        }));
                    }
                }
            }
            invalid(format!("jq does not parse: {}", reasons.join("; ")))
        })?;

    // The prelude first: when two natives share a name and arity, jaq keeps the first.
    let funs = natives::funs().chain(
        jaq_core::funs()
            .chain(jaq_std::funs())
            .chain(jaq_json::funs())
            .filter(|(name, _, _)| !DENIED_FUNS.contains(name)),
    );
    if !checked {
        // The loader accepted what the term parser did not: never run a program whose
        // definitions were not checked for recursion.
        return Err(invalid(
            "program must be a single jq expression (definitions first)",
        ));
    }
    Compiler::default()
        .with_funs(funs)
        .with_global_vars(GLOBALS)
        .compile(modules)
        .map_err(|errors| {
            let reasons: Vec<String> = errors
                .into_iter()
                .flat_map(|(_, items)| items)
                .map(|(name, undefined)| {
                    format!(
                        "{}: undefined {} `{name}`",
                        source.locate_part(name),
                        undefined.as_str()
                    )
                })
                .collect();
            invalid(format!(
                "jq does not compile: {} (the sandbox offers no env, input, halt, debug, stderr, now, repeat, while, until or recurse(f))",
                reasons.join("; ")
            ))
        })
}

/// The syntax faults of shared definitions parsed on their own as `def` items, located
/// in them ("definitions line L, column C"); `None` when they parse.
fn definitions_syntax(definitions: &str) -> Option<String> {
    use jaq_core::load::{Lexer, Parser, lex::Token, parse::Expect};
    let locate = |offset: usize| {
        let (l, c) = line_column(definitions, offset);
        format!("definitions line {l}, column {c}")
    };
    let tokens = match Lexer::new(definitions).lex() {
        Ok(tokens) => tokens,
        Err(errors) => {
            let faults: Vec<String> = errors
                .iter()
                .map(|(expect, at)| {
                    format!(
                        "{}: expected {}",
                        locate(jaq_core::load::span(definitions, at).start),
                        expect.as_str()
                    )
                })
                .collect();
            return Some(faults.join("; "));
        }
    };
    let errors = Parser::new(&tokens).parse(|p| p.defs()).err()?;
    let faults: Vec<String> = errors
        .iter()
        .map(|(expect, found)| {
            let at = found.map_or(definitions.len(), |Token(s, _)| {
                jaq_core::load::span(definitions, s).start
            });
            let what = match (expect, found) {
                (_, Some(Token("import" | "include", _))) => "imports are not allowed".to_string(),
                (Expect::Nothing, _) => "expected `def`: definitions must be only `def name: body;` items, with no expression after them".to_string(),
                (expect, None) => format!("expected {} before the end", expect.as_str()),
                (expect, Some(_)) => format!("expected {}", expect.as_str()),
            };
            format!("{}: {what}", locate(at))
        })
        .collect();
    Some(faults.join("; "))
}

fn within_limits(what: &str, code: &str) -> Result<(), ConnectorError> {
    if code.len() > MAX_PROGRAM_BYTES {
        return Err(invalid(format!(
            "{what} is {} bytes; the limit is {MAX_PROGRAM_BYTES}",
            code.len()
        )));
    }
    if nesting(code) > MAX_NESTING {
        return Err(invalid(format!(
            "{what} nests deeper than {MAX_NESTING} brackets"
        )));
    }
    Ok(())
}

impl Program {
    /// Compiles a partner program under the sandbox's rules.
    pub fn compile(code: &str) -> Result<Self, ConnectorError> {
        Self::compile_with(None, code)
    }

    /// Compiles a partner program that may call the connector's shared `definitions`
    /// (`def name: body;` items, checked by [`Program::check_definitions`]). The
    /// definitions are bounded like a program, and so is the program; together they nest
    /// no deeper than one program may.
    pub fn compile_with(definitions: Option<&str>, code: &str) -> Result<Self, ConnectorError> {
        within_limits("program", code)?;
        let joined;
        let source = match definitions {
            None => Source { code, defs_len: 0 },
            Some(defs) => {
                within_limits("definitions", defs)?;
                // Two newlines: a comment ending in a backslash continues onto the next
                // line (jq 1.7), and must swallow the empty line, not the program's first.
                joined = format!("{defs}\n\n{code}");
                within_limits("program with its definitions", &joined)?;
                Source {
                    code: &joined,
                    defs_len: defs.len() + 2,
                }
            }
        };
        Self::compile_source(source)
    }

    /// Checks a connector's shared `definitions` on their own: only `def` items, every one
    /// compiling under the sandbox's rules, none recursive.
    pub fn check_definitions(definitions: &str) -> Result<(), ConnectorError> {
        // Bounded before anything parses them: jaq's parser recurses per bracket.
        within_limits("definitions", definitions)?;
        // Parsed alone first, so a syntax fault is located in them (joined to a program,
        // a missing `;` would be reported in the program).
        if let Some(faults) = definitions_syntax(definitions) {
            return Err(invalid(format!("jq does not parse: {faults}")));
        }
        Self::compile_with(Some(definitions), ".").map(drop)
    }

    fn compile_source(source: Source<'_>) -> Result<Self, ConnectorError> {
        if ON_BIG_STACK.with(std::cell::Cell::get) {
            return compile_on_this_thread(source).map(|filter| Self { filter });
        }
        let filter = std::thread::scope(|scope| {
            std::thread::Builder::new()
                .name("mallgate-jq-compile".into())
                .stack_size(STACK_BYTES)
                .spawn_scoped(scope, || compile_on_this_thread(source))
                .map_err(|e| invalid(format!("cannot start the compiler thread: {e}")))?
                .join()
                .map_err(|_| invalid("the jq compiler failed on this program"))?
        })?;
        Ok(Self { filter })
    }

    /// Runs the program on `input` with the globals (`$provenance`, `$query`,
    /// `$locations`), on the calling thread, within `budget`. Returns the outputs and the
    /// prelude's warnings; a jq error is `Err(Ok(message))`, an overrun `Err(Err(..))`.
    pub fn run(
        &self,
        input: Val,
        globals: [Val; 3],
        budget: &Budget,
    ) -> Result<(Vec<Val>, Vec<mallgate_schemas::Warning>), RunError> {
        natives::begin_run();
        let ctx = Ctx::<D>::new(&self.filter.lut, Vars::new(globals));
        let mut outputs = Vec::new();
        for result in self.filter.id.run((ctx, input)) {
            if Instant::now() > budget.deadline {
                return Err(RunError::Overrun("mapping deadline exceeded".into()));
            }
            match result {
                Ok(v) => outputs.push(v),
                Err(exn) => {
                    return Err(match exn.get_err() {
                        Ok(e) => RunError::Failed(match e.into_val() {
                            Val::TStr(text) => String::from_utf8_lossy(&text).into_owned(),
                            other => other.to_string(),
                        }),
                        Err(_) => RunError::Failed("program stopped abnormally".into()),
                    });
                }
            }
            if outputs.len() > budget.max_outputs {
                return Err(RunError::Overrun(format!(
                    "more than {} outputs",
                    budget.max_outputs
                )));
            }
        }
        Ok((outputs, natives::take_warnings()))
    }
}

/// How a run failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunError {
    /// The program raised an error on this input (a bad record): drop the record.
    Failed(String),
    /// The program broke the sandbox budget: quarantine the version.
    Overrun(String),
}

#[cfg(test)]
mod tests;
