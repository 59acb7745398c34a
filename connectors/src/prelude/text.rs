//! Text clean-up: whitespace, HTML entities and tags, and UTF-8 that was decoded as
//! Windows-1252 and encoded again ("CafÃ©" -> "Café"), repaired only where unambiguous.

/// Windows-1252's characters for bytes 0x80..=0x9F (None: undefined byte).
const CP1252_HIGH: [Option<char>; 32] = [
    Some('€'),
    None,
    Some('‚'),
    Some('ƒ'),
    Some('„'),
    Some('…'),
    Some('†'),
    Some('‡'),
    Some('ˆ'),
    Some('‰'),
    Some('Š'),
    Some('‹'),
    Some('Œ'),
    None,
    Some('Ž'),
    None,
    None,
    Some('‘'),
    Some('’'),
    Some('“'),
    Some('”'),
    Some('•'),
    Some('–'),
    Some('—'),
    Some('˜'),
    Some('™'),
    Some('š'),
    Some('›'),
    Some('œ'),
    None,
    Some('ž'),
    Some('Ÿ'),
];

/// The byte a character stood for if text was mis-decoded as Windows-1252 (or Latin-1).
fn cp1252_byte(c: char) -> Option<u8> {
    let code = u32::from(c);
    if code < 0x80 || (0xA0..=0xFF).contains(&code) || (0x80..=0x9F).contains(&code) {
        // ASCII and Latin-1 map to themselves; raw C1 controls are what a Latin-1 decoder
        // makes of the bytes Windows-1252 leaves undefined.
        return u8::try_from(code).ok();
    }
    CP1252_HIGH
        .iter()
        .position(|&m| m == Some(c))
        .and_then(|i| u8::try_from(0x80 + i).ok())
}

/// Undoes one round of UTF-8 mis-decoded as Windows-1252, when that is unambiguous: every
/// character maps back to a byte, the bytes are valid UTF-8 and hold at least one
/// multi-byte sequence. Legitimate Latin-1 text ("café") never qualifies: its bytes are not
/// valid UTF-8.
pub fn repair_mojibake(s: &str) -> Option<String> {
    if s.is_ascii() {
        return None;
    }
    let bytes: Vec<u8> = s.chars().map(cp1252_byte).collect::<Option<_>>()?;
    let repaired = String::from_utf8(bytes).ok()?;
    (repaired != s && !repaired.is_ascii()).then_some(repaired)
}

/// Collapses runs of whitespace and control characters into one space and trims.
pub fn squeeze_whitespace(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut pending = false;
    for c in s.chars() {
        if c.is_whitespace() || c.is_control() || c == '\u{feff}' {
            pending = !out.is_empty();
        } else {
            if pending {
                out.push(' ');
                pending = false;
            }
            out.push(c);
        }
    }
    out
}

/// Mojibake repaired (at most twice: text double-encoded twice over), whitespace squeezed.
pub fn clean_text(s: &str) -> String {
    let mut text = s.to_owned();
    for _ in 0..2 {
        match repair_mojibake(&text) {
            Some(repaired) => text = repaired,
            None => break,
        }
    }
    squeeze_whitespace(&text)
}

const ENTITIES: &[(&str, char)] = &[
    ("amp", '&'),
    ("lt", '<'),
    ("gt", '>'),
    ("quot", '"'),
    ("apos", '\''),
    ("nbsp", '\u{a0}'),
    ("copy", '©'),
    ("reg", '®'),
    ("trade", '™'),
    ("deg", '°'),
    ("hellip", '…'),
    ("mdash", '—'),
    ("ndash", '–'),
    ("lsquo", '‘'),
    ("rsquo", '’'),
    ("ldquo", '“'),
    ("rdquo", '”'),
    ("bull", '•'),
    ("middot", '·'),
    ("times", '×'),
    ("frac12", '½'),
    ("frac14", '¼'),
    ("frac34", '¾'),
    ("euro", '€'),
    ("pound", '£'),
    ("yen", '¥'),
    ("cent", '¢'),
    ("sect", '§'),
    ("para", '¶'),
    ("eacute", 'é'),
    ("egrave", 'è'),
    ("ecirc", 'ê'),
    ("aacute", 'á'),
    ("agrave", 'à'),
    ("acirc", 'â'),
    ("auml", 'ä'),
    ("ouml", 'ö'),
    ("uuml", 'ü'),
    ("szlig", 'ß'),
    ("ntilde", 'ñ'),
    ("ccedil", 'ç'),
    ("oacute", 'ó'),
    ("iacute", 'í'),
    ("uacute", 'ú'),
];

fn entity(name: &str) -> Option<char> {
    if let Some(num) = name.strip_prefix('#') {
        let code = match num.strip_prefix(['x', 'X']) {
            Some(hex) => u32::from_str_radix(hex, 16).ok()?,
            None => num.parse().ok()?,
        };
        return char::from_u32(code).filter(|c| *c != '\0');
    }
    ENTITIES.iter().find(|(n, _)| *n == name).map(|(_, c)| *c)
}

/// Decodes one level of HTML character references (`&amp;lt;` becomes `&lt;`: call it
/// again for double-escaped text). Unknown references are kept as they are.
pub fn html_unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(at) = rest.find('&') {
        out.push_str(&rest[..at]);
        rest = &rest[at..];
        let decoded = rest[1..]
            .find(';')
            .filter(|end| *end <= 10)
            .and_then(|end| entity(&rest[1..=end]).map(|c| (c, end + 2)));
        match decoded {
            Some((c, len)) => {
                out.push(c);
                rest = &rest[len..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// Removes HTML tags, comments and the content of `script`/`style`; block tags become a
/// space; whitespace squeezed. Entities are left alone (see [`html_unescape`]).
pub fn strip_html(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(at) = rest.find('<') {
        out.push_str(&rest[..at]);
        rest = &rest[at..];
        let after = &rest[1..];
        let starts_tag = after
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '/' || c == '!');
        if !starts_tag {
            out.push('<');
            rest = after;
            continue;
        }
        if let Some(comment) = after.strip_prefix("!--") {
            rest = comment.find("-->").map_or("", |end| &comment[end + 3..]);
            continue;
        }
        let Some(end) = after.find('>') else {
            // An unterminated tag: drop the remainder rather than leak markup.
            rest = "";
            break;
        };
        let tag = &after[..end];
        let name: String = tag
            .trim_start_matches('/')
            .chars()
            .take_while(char::is_ascii_alphanumeric)
            .collect::<String>()
            .to_ascii_lowercase();
        rest = &after[end + 1..];
        if !tag.starts_with('/') && (name == "script" || name == "style") {
            let close = format!("</{name}");
            let lower = rest.to_ascii_lowercase();
            rest = lower
                .find(&close)
                .and_then(|i| rest[i..].find('>').map(|j| &rest[i + j + 1..]))
                .unwrap_or("");
            continue;
        }
        if matches!(
            name.as_str(),
            "br" | "p" | "div" | "li" | "ul" | "ol" | "tr" | "td" | "th" | "h1" | "h2" | "h3"
        ) {
            out.push(' ');
        }
    }
    out.push_str(rest);
    squeeze_whitespace(&out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mojibake_is_repaired_when_unambiguous() {
        assert_eq!(clean_text("CafÃ© crÃ¨me"), "Café crème");
        assert_eq!(clean_text("Caf\u{e9}"), "Café", "real Latin-1 text stays");
        assert_eq!(clean_text("â€œquotedâ€\u{9d}"), "“quoted”");
        assert_eq!(clean_text("naÃƒÂ¯ve"), "naïve", "twice double-encoded");
        assert_eq!(clean_text("日本"), "日本");
        assert_eq!(repair_mojibake("plain"), None);
    }

    #[test]
    fn whitespace_is_squeezed() {
        assert_eq!(clean_text("  4K\tTV \n\n 55\u{a0}in \u{0} "), "4K TV 55 in");
        assert_eq!(clean_text(""), "");
    }

    #[test]
    fn html_entities_one_level_at_a_time() {
        let double = "Priority Mail&amp;lt;sup&amp;gt;&amp;#8482;&amp;lt;/sup&amp;gt;";
        let once = html_unescape(double);
        assert_eq!(once, "Priority Mail&lt;sup&gt;&#8482;&lt;/sup&gt;");
        let twice = html_unescape(&once);
        assert_eq!(twice, "Priority Mail<sup>™</sup>");
        assert_eq!(strip_html(&twice), "Priority Mail™");
        assert_eq!(
            html_unescape("AT&T &bogus; &#xZZ; &"),
            "AT&T &bogus; &#xZZ; &"
        );
        assert_eq!(html_unescape("&#0;&#x1F600;"), "&#0;😀");
    }

    #[test]
    fn tags_are_stripped() {
        assert_eq!(
            strip_html("<p>Fast<br/>and <b>cheap</b></p><script>alert(1)</script><!-- x -->!"),
            "Fast and cheap !"
        );
        assert_eq!(strip_html("1 < 2 and a<b"), "1 < 2 and a");
        assert_eq!(strip_html("<STYLE>p{}</style>ok"), "ok");
    }
}
