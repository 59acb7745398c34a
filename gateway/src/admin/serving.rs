//! The serving set an admin gateway builds: the connectors directory, with every
//! connector that has an active version in the store replaced by that version, and the
//! store's canaries beside them. Startup and every change build it the same way.

use std::collections::BTreeMap;

use mallgate_connectors::{ConnectorError, ConnectorSpec, Format, Owner};
use sha2::{Digest, Sha256};

use super::Admin;
use super::auth::Role;
use super::change::Event;
use crate::GatewayError;
use crate::registry::{Document, documents_in};

impl Admin {
    /// The documents to serve: the connectors directory, with any connector that has an
    /// active version in the store replaced by that version.
    pub(super) fn documents(&self) -> Result<Vec<Document>, GatewayError> {
        let stored = self.store.active_documents()?;
        let mut docs = self.directory_documents()?;
        for (id, version, text) in stored {
            // A quarantined version never serves again (the pointer moved when it was
            // quarantined; this covers a crash in between): its last good one does.
            let (version, text) = match self.store.quarantined(&id, version)? {
                None => (version, text),
                Some(_) => match self.store.last_good(&id, version)? {
                    Some(good) => (good, self.store.document(&id, good)?),
                    None => continue,
                },
            };
            let owner = self.author_owner(&id, version);
            // A partner's version beyond its (since narrowed) grant does not serve, and
            // does not stop everyone else's from serving: the directory's document, if
            // any, takes its place.
            if matches!(owner, Owner::Partner(_))
                && let Ok(spec) = ConnectorSpec::load(&text, Format::sniff(&text), &owner)
            {
                let beyond = self.api.registry.grant_problems(&spec, &text);
                if !beyond.is_empty() {
                    self.note(
                        &Event::new(&Role::Operator, "connector.grant", &id)
                            .version(version)
                            .detail(ConnectorError::InvalidSpec { problems: beyond }.to_string()),
                        "rejected",
                    );
                    continue;
                }
            }
            docs.insert(
                id.clone(),
                Document {
                    name: format!("admin:{id}@v{version}"),
                    text,
                    owner,
                    version: Some(version),
                    canary_percent: None,
                },
            );
        }
        let mut out: Vec<Document> = docs.into_values().collect();
        for (id, version, percent, text) in self.store.canary_documents()? {
            if self.store.quarantined(&id, version)?.is_some() {
                continue;
            }
            let owner = self.author_owner(&id, version);
            out.push(Document {
                name: format!("admin:{id}@v{version} (canary {percent}%)"),
                text,
                owner,
                version: Some(version),
                canary_percent: Some(percent),
            });
        }
        Ok(out)
    }

    /// The connectors directory's documents by connector id. A file that does not load
    /// keeps its last good version (built from it) serving, audited; a new file that never
    /// built is passed on under its name, for the build to name its problems.
    fn directory_documents(&self) -> Result<BTreeMap<String, Document>, GatewayError> {
        let mut docs: BTreeMap<String, Document> = BTreeMap::new();
        let Some(dir) = &self.connectors_dir else {
            return Ok(docs);
        };
        let current = self.api.registry.load();
        for doc in documents_in(dir)? {
            // The id: from the serving connector built from this very text, else parsed.
            let digest = format!("{:x}", Sha256::digest(doc.text.as_bytes()));
            let id = match current.connectors.iter().find(|c| c.digest == digest) {
                Some(c) => c.id().to_owned(),
                None => {
                    match ConnectorSpec::load(&doc.text, Format::sniff(&doc.text), &doc.owner)
                        .map_err(|e| e.to_string())
                        .and_then(|s| {
                            let refused = self.api.registry.address_problems(&s);
                            if refused.is_empty() {
                                Ok(s.id)
                            } else {
                                Err(ConnectorError::InvalidSpec { problems: refused }.to_string())
                            }
                        }) {
                        Ok(id) => id,
                        Err(reason) => {
                            // A broken file must not block every other change: its last good
                            // version (built from this file) keeps serving, and it is audited.
                            match current.connectors.iter().find(|c| c.source == doc.name) {
                                Some(last) => {
                                    self.note(
                                        &Event::new(
                                            &Role::Operator,
                                            "directory.document",
                                            &doc.name,
                                        )
                                        .version(last.version())
                                        .detail(format!(
                                            "{reason}; the last good version keeps serving"
                                        )),
                                        "rejected",
                                    );
                                    docs.insert(
                                        last.id().to_owned(),
                                        Document {
                                            name: doc.name.clone(),
                                            text: last.text.to_string(),
                                            owner: last.owner.clone(),
                                            version: None,
                                            canary_percent: None,
                                        },
                                    );
                                    continue;
                                }
                                // A new file that never built: the reload names its problems.
                                None => doc.name.clone(),
                            }
                        }
                    }
                }
            };
            docs.insert(id, doc);
        }
        Ok(docs)
    }

    /// The owner a stored version was submitted as.
    /// Fails closed: a version whose author cannot be read counts as its partner's
    /// (untrusted: isolated, granted, partner secrets only), never as the operator's.
    pub(super) fn author_owner(&self, id: &str, version: u32) -> Owner {
        let meta = self
            .store
            .versions(id)
            .ok()
            .and_then(|v| v.into_iter().find(|m| m.version == version));
        match meta {
            Some(m) => Role::parse(&m.author)
                .map_or_else(|| Owner::Partner(m.partner.clone()), |r| r.owner()),
            None => Owner::Partner(String::new()),
        }
    }

    /// Builds and swaps the whole serving set (the startup path).
    pub fn reload(&self) -> Result<u64, GatewayError> {
        // The revision the watch had seen before the store is read: what is applied is at
        // least that (the fleet view and `mallgate_store_revision`).
        let revision = self.store.revision();
        let docs = self.documents()?;
        let generation = self.api.registry.reload(&docs).map(|s| s.generation)?;
        if let Some(revision) = revision {
            self.api.registry.set_store_revision(revision);
        }
        Ok(generation)
    }

    /// This replica's record in the fleet view: its id, binary, generation, the store
    /// revision applied, and the versions it serves.
    pub fn fleet_record(&self, id: &str) -> serde_json::Value {
        let snapshot = self.api.registry.load();
        let connectors: serde_json::Map<String, serde_json::Value> = snapshot
            .connectors
            .iter()
            .map(|c| (c.id().to_owned(), c.version().into()))
            .collect();
        let canaries: serde_json::Map<String, serde_json::Value> = snapshot
            .canaries
            .iter()
            .map(|c| (c.live.id().to_owned(), c.live.version().into()))
            .collect();
        serde_json::json!({
            "id": id,
            "version": env!("CARGO_PKG_VERSION"),
            "generation": snapshot.generation,
            "store_revision": self.api.registry.store_revision(),
            "connectors": connectors,
            "canaries": canaries,
            "leader": self.fleet.elected(),
            "replicas_counted": self.fleet.share.replicas(),
            "judging": self.judging(),
        })
    }

    /// `GET /admin/v1/fleet`: every live replica's record (one, this one, without a
    /// shared store).
    pub(super) fn fleet(
        &self,
        role: &super::Role,
    ) -> Result<crate::api::Response, crate::problem::ApiError> {
        role.operator_only()?;
        let members = self.store.members().map_err(|e| self.store_error(&e))?;
        let mut replicas: Vec<serde_json::Value> = members
            .iter()
            .filter_map(|bytes| serde_json::from_slice(bytes).ok())
            .collect();
        if replicas.is_empty() {
            replicas.push(self.fleet_record("local"));
        }
        replicas.sort_by(|a, b| a["id"].as_str().cmp(&b["id"].as_str()));
        Ok(crate::api::Response::json_value(
            200,
            &serde_json::json!({"replicas": replicas}),
        ))
    }
}
