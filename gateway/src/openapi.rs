//! `/openapi.json`: `schemas/openapi.yaml` with the unified model schemas bundled in, so the
//! document stands alone (schemathesis and code generators need no other file).
//!
//! Each `schemas/unified/<stem>.schema.json` becomes `#/components/schemas/<Stem>` (stem in
//! PascalCase) without its `$id`/`$schema`, and every reference is rewritten to a JSON
//! pointer into the bundle: `money.schema.json` -> `#/components/schemas/Money`,
//! `common.schema.json#/$defs/x` -> `#/components/schemas/Common/$defs/x`, and a local
//! `#/$defs/x` -> `#/components/schemas/<Own>/$defs/x`.

use std::sync::OnceLock;

use serde_json::Value;

/// `inventory_level` -> `InventoryLevel`.
pub fn component_name(stem: &str) -> String {
    stem.split('_')
        .map(|part| {
            let mut chars = part.chars();
            chars
                .next()
                .map(|c| c.to_ascii_uppercase().to_string() + chars.as_str())
                .unwrap_or_default()
        })
        .collect()
}

fn rewrite(value: &mut Value, own: &str) {
    match value {
        Value::Object(map) => {
            if let Some(Value::String(target)) = map.get_mut("$ref") {
                let (file, fragment) = target.split_once('#').unwrap_or((target.as_str(), ""));
                let component = match file.strip_suffix(".schema.json") {
                    Some(stem) => component_name(stem),
                    None => own.to_owned(),
                };
                *target = format!("#/components/schemas/{component}{fragment}");
            }
            for v in map.values_mut() {
                rewrite(v, own);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|v| rewrite(v, own)),
        _ => {}
    }
}

fn bundle() -> Result<Value, String> {
    let (mut doc, _) = mallgate_connectors::source::parse(
        mallgate_schemas::OPENAPI_YAML,
        mallgate_connectors::Format::Yaml,
    )
    .map_err(|p| format!("schemas/openapi.yaml: {p}"))?;
    let schemas = doc
        .pointer_mut("/components/schemas")
        .and_then(Value::as_object_mut)
        .ok_or("schemas/openapi.yaml has no components.schemas")?;
    for stem in mallgate_schemas::unified_stems() {
        let mut schema = mallgate_schemas::schema_document(stem)
            .cloned()
            .ok_or_else(|| format!("no unified schema `{stem}`"))?;
        let name = component_name(stem);
        if let Some(map) = schema.as_object_mut() {
            map.remove("$id");
            map.remove("$schema");
        }
        rewrite(&mut schema, &name);
        schemas.insert(name, schema);
    }
    Ok(doc)
}

/// The bundled document (built once).
pub fn document() -> &'static Value {
    static DOC: OnceLock<Value> = OnceLock::new();
    DOC.get_or_init(|| match bundle() {
        Ok(doc) => doc,
        // The document is embedded at build time and bundled by a test; a broken one is a
        // build defect, reported in the document itself rather than by a panic.
        Err(e) => serde_json::json!({"openapi": "3.1.0", "info": {"title": "broken", "version": "0", "description": e}, "paths": {}}),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_document_bundles_every_reference() {
        let doc = bundle().expect("bundles");
        assert_eq!(doc["openapi"], "3.1.0");
        fn refs<'a>(v: &'a Value, out: &mut Vec<&'a str>) {
            match v {
                Value::Object(m) => {
                    if let Some(Value::String(r)) = m.get("$ref") {
                        out.push(r);
                    }
                    m.values().for_each(|v| refs(v, out));
                }
                Value::Array(a) => a.iter().for_each(|v| refs(v, out)),
                _ => {}
            }
        }
        let mut all = Vec::new();
        refs(&doc, &mut all);
        assert!(all.len() > 20);
        for r in all {
            let pointer = r.strip_prefix('#').expect("local reference");
            assert!(doc.pointer(pointer).is_some(), "dangling reference {r}");
        }
    }
}
