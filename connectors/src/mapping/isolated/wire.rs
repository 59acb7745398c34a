//! The pipe protocol between the gateway and a sandbox worker.
//!
//! A job is one frame: `u32` length (little endian) of a JSON [`JobHeader`], the header, a
//! `u32` length of the payload, the payload's raw bytes (a partner reply, never re-encoded).
//! An answer is one frame: `u32` length, a JSON [`Answer`]. Both sides refuse a frame over
//! their cap before reading it.

use std::io::{Read, Write};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::Problem;
use crate::mapping::{Globals, RawPage};
use crate::source::Format;
use crate::spec::{Capability, Owner};

/// The connector document a worker compiles once and keeps under [`JobHeader::set`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProgramSource {
    pub text: String,
    pub format: Format,
    pub owner: Owner,
}

/// What to run.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "task", rename_all = "snake_case")]
pub enum Task {
    /// Decode the payload as a reply of `capability` and map it (no validation).
    MapReply { capability: Capability },
    /// Run a request program on `$query`: the query value `field`, or the body when `None`.
    Request {
        capability: Capability,
        field: Option<String>,
    },
}

/// A job's header.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobHeader {
    /// The compiled program set (one connector version) the job runs.
    pub set: u64,
    /// The set's document, when the gateway does not know the worker to hold it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load: Option<ProgramSource>,
    pub task: Task,
    pub globals: Globals,
    /// Time left for the job, in milliseconds, as the worker's own deadline.
    pub deadline_ms: u64,
}

/// A worker's answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Answer {
    Page {
        page: RawPage,
    },
    Value {
        value: Option<Value>,
    },
    /// The job's error as (kind, reason); see `dry_run::parts`.
    Failed {
        kind: String,
        reason: String,
    },
    /// The document did not compile in the worker.
    InvalidSpec {
        problems: Vec<Problem>,
    },
    /// The worker does not hold `set`: send it again with its document.
    Unknown,
}

/// A worker's answer with its state.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Reply {
    pub answer: Answer,
    /// The worker exits after this answer (it has used most of its CPU-time limit).
    #[serde(default)]
    pub retiring: bool,
}

fn invalid(reason: impl Into<String>) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, reason.into())
}

fn length(len: usize) -> std::io::Result<[u8; 4]> {
    u32::try_from(len)
        .map(u32::to_le_bytes)
        .map_err(|_| invalid("a frame over 4 GiB"))
}

/// One frame: length, bytes.
pub fn frame(parts: &[&[u8]]) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::with_capacity(parts.iter().map(|p| p.len() + 4).sum());
    for part in parts {
        out.extend_from_slice(&length(part.len())?);
        out.extend_from_slice(part);
    }
    Ok(out)
}

/// Reads one length-prefixed part of at most `cap` bytes; `Ok(None)` at a clean end of
/// the stream.
pub fn read_part(reader: &mut impl Read, cap: usize) -> std::io::Result<Option<Vec<u8>>> {
    let mut len = [0u8; 4];
    match reader.read_exact(&mut len) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = u32::from_le_bytes(len) as usize;
    if len > cap {
        return Err(invalid(format!("a frame of {len} bytes; the cap is {cap}")));
    }
    let mut buf = vec![0u8; len];
    reader.read_exact(&mut buf)?;
    Ok(Some(buf))
}

/// Writes `reply` as one frame and flushes.
pub fn write_reply(writer: &mut impl Write, reply: &Reply) -> std::io::Result<()> {
    let json = serde_json::to_vec(reply).map_err(|e| invalid(e.to_string()))?;
    writer.write_all(&frame(&[&json])?)?;
    writer.flush()
}
