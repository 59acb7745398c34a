//! How one capability is served: the request, pagination, decoding and the mapping.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{CachePolicy, default_one};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum Method {
    #[default]
    #[serde(rename = "GET")]
    Get,
    #[serde(rename = "POST")]
    Post,
    #[serde(rename = "PUT")]
    Put,
}

/// A jq program computing a value from the query.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JqValue {
    pub jq: String,
}

/// A query parameter's value: a template, or a jq program.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum QueryValue {
    Template(String),
    Jq(JqValue),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BodyFormat {
    Json,
    Form,
    Xml,
    Text,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Body {
    pub format: BodyFormat,
    pub jq: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestSpec {
    #[serde(default)]
    pub method: Method,
    pub path: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub query: BTreeMap<String, QueryValue>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<Body>,
}

fn default_max_pages() -> u32 {
    10
}

fn default_rel() -> String {
    "next".to_owned()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenLocation {
    Query,
    Header,
}

/// How to walk a multi-page answer. Every style stops at `max_pages`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "style", rename_all = "snake_case", deny_unknown_fields)]
pub enum Pagination {
    Page {
        param: String,
        #[serde(default = "default_one")]
        start: u32,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        size_param: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        size: Option<u32>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        total_pages: Option<String>,
        #[serde(default = "default_max_pages")]
        max_pages: u32,
    },
    Offset {
        param: String,
        size_param: String,
        size: u32,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        total: Option<String>,
        #[serde(default = "default_max_pages")]
        max_pages: u32,
    },
    Cursor {
        param: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        first: Option<String>,
        next: String,
        #[serde(default = "default_max_pages")]
        max_pages: u32,
    },
    LinkHeader {
        #[serde(default = "default_rel")]
        rel: String,
        #[serde(default = "default_max_pages")]
        max_pages: u32,
    },
    NextUrl {
        next: String,
        #[serde(default = "default_max_pages")]
        max_pages: u32,
    },
    NextToken {
        next: String,
        #[serde(rename = "in")]
        location: TokenLocation,
        name: String,
        #[serde(default = "default_max_pages")]
        max_pages: u32,
    },
}

impl Pagination {
    /// The jq program the walk reads from each reply, with its field name (a pointer suffix
    /// below the capability): `pagination/next`, `pagination/total_pages`...
    pub fn program(&self) -> Option<(&'static str, &str)> {
        match self {
            Self::Page { total_pages, .. } => total_pages
                .as_deref()
                .map(|c| ("pagination/total_pages", c)),
            Self::Offset { total, .. } => total.as_deref().map(|c| ("pagination/total", c)),
            Self::Cursor { next, .. }
            | Self::NextUrl { next, .. }
            | Self::NextToken { next, .. } => Some(("pagination/next", next.as_str())),
            Self::LinkHeader { .. } => None,
        }
    }

    /// The most pages one call walks.
    pub fn max_pages(&self) -> u32 {
        match self {
            Self::Page { max_pages, .. }
            | Self::Offset { max_pages, .. }
            | Self::Cursor { max_pages, .. }
            | Self::LinkHeader { max_pages, .. }
            | Self::NextUrl { max_pages, .. }
            | Self::NextToken { max_pages, .. } => *max_pages,
        }
    }

    /// Caps the walk at `n` pages (a connector test replays only the pages it recorded).
    pub fn set_max_pages(&mut self, n: u32) {
        match self {
            Self::Page { max_pages, .. }
            | Self::Offset { max_pages, .. }
            | Self::Cursor { max_pages, .. }
            | Self::LinkHeader { max_pages, .. }
            | Self::NextUrl { max_pages, .. }
            | Self::NextToken { max_pages, .. } => *max_pages = n,
        }
    }

    /// The header the walk sets (a next token sent in a header), if any.
    pub(super) fn header_name(&self) -> Option<&str> {
        match self {
            Self::NextToken {
                location: TokenLocation::Header,
                name,
                ..
            } => Some(name),
            _ => None,
        }
    }

    /// The query parameter the walk sets, which the request template must not set too.
    pub(super) fn query_param(&self) -> Option<&str> {
        match self {
            Self::Page { param, .. } | Self::Offset { param, .. } | Self::Cursor { param, .. } => {
                Some(param)
            }
            Self::NextToken {
                location: TokenLocation::Query,
                name,
                ..
            } => Some(name),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Decode {
    #[default]
    Json,
    Xml,
    Csv,
    X12,
}

impl Decode {
    pub fn name(self) -> &'static str {
        match self {
            Self::Json => "json",
            Self::Xml => "xml",
            Self::Csv => "csv",
            Self::X12 => "x12",
        }
    }
}

fn default_records() -> String {
    ".".to_owned()
}

/// How one capability is served.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CapabilitySpec {
    pub request: RequestSpec,
    /// `None`: true for GET, false otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotent: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pagination: Option<Pagination>,
    #[serde(default)]
    pub decode: Decode,
    #[serde(default = "default_records")]
    pub records: String,
    pub map: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_found: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub freshness_s: Option<u32>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub supports: Vec<String>,
    /// Overrides `policies.cache`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache: Option<CachePolicy>,
}

impl CapabilitySpec {
    /// Whether a retry or hedge of this capability's requests is safe.
    pub fn is_idempotent(&self) -> bool {
        self.idempotent
            .unwrap_or(self.request.method == Method::Get)
    }
}
