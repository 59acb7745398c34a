//! `GET /v1/inventory?gtin=&near=LAT,LON&radius_km=&fulfillment=pickup|ship`.
//!
//! Stock of one variant across partners. Partners that look stock up by their own sku
//! (found in their `catalog.search` answer for the GTIN) are asked with it; partners that
//! take the GTIN are asked directly; a partner the gateway has no way to ask is `skipped`.
//! Locations come from `locations.list` (cached for a day), so a level can say where it is
//! and how far. Pickup stock is kept within `radius_km` of `near`; ship stock is not
//! filtered by distance. Stock older than its capability's `freshness_s` is `unknown`.

use std::collections::HashMap;

use mallgate_connectors::Capability;
use mallgate_schemas::{InventoryLevel, Location, Record, StockAvailable, StockFulfillment};
use serde::Serialize;
use serde_json::{Map, Value, json};

use super::{Api, Caching, Params, Request, Response, all_failed, envelope, view_of};
use crate::fanout::{self, PlannedCall, SourceResult};
use crate::problem::ApiError;
use crate::registry::{LiveConnector, View};
use tokio::time::Instant;

/// One level, with its location and distance when known.
#[derive(Debug, Serialize)]
struct Stock {
    level: InventoryLevel,
    #[serde(skip_serializing_if = "Option::is_none")]
    location: Option<Location>,
    #[serde(skip_serializing_if = "Option::is_none")]
    distance_km: Option<f64>,
}

fn near(params: &Params) -> Result<Option<(f64, f64)>, ApiError> {
    let Some(text) = params.get("near") else {
        return Ok(None);
    };
    let bad = || ApiError::param("near", "must be LAT,LON in decimal degrees");
    let (lat, lon) = text.split_once(',').ok_or_else(bad)?;
    let lat: f64 = lat.trim().parse().map_err(|_| bad())?;
    let lon: f64 = lon.trim().parse().map_err(|_| bad())?;
    if !(-90.0..=90.0).contains(&lat) || !(-180.0..=180.0).contains(&lon) {
        return Err(bad());
    }
    Ok(Some((lat, lon)))
}

/// Great-circle distance in km (haversine, mean Earth radius).
pub(crate) fn distance_km(a: (f64, f64), b: (f64, f64)) -> f64 {
    let (la1, lo1, la2, lo2) = (
        a.0.to_radians(),
        a.1.to_radians(),
        b.0.to_radians(),
        b.1.to_radians(),
    );
    let h = ((la2 - la1) / 2.0).sin().powi(2)
        + la1.cos() * la2.cos() * ((lo2 - lo1) / 2.0).sin().powi(2);
    2.0 * 6371.0088 * h.sqrt().asin()
}

/// An inventory query, checked.
#[derive(Debug)]
struct StockQuery {
    gtin: String,
    point: Option<(f64, f64)>,
    radius_km: f64,
    fulfillment: Option<StockFulfillment>,
}

impl StockQuery {
    fn parse(params: &Params) -> Result<Self, ApiError> {
        let gtin = params
            .gtin("gtin")?
            .ok_or_else(|| ApiError::param("gtin", "is required"))?;
        let point = near(params)?;
        let radius_km = params.integer("radius_km", 1, 1000)?.unwrap_or(50) as f64;
        if params.get("radius_km").is_some() && point.is_none() {
            return Err(ApiError::param("radius_km", "needs `near`"));
        }
        let fulfillment = params.choice("fulfillment", &["pickup", "ship"])?.map(|f| {
            if f == "pickup" {
                StockFulfillment::Pickup
            } else {
                StockFulfillment::Ship
            }
        });
        Ok(Self {
            gtin,
            point,
            radius_km,
            fulfillment,
        })
    }

    /// The stock lookup's query, with the partner's sku when it needs one.
    fn partner_query(&self, sku: Option<&String>) -> Value {
        let mut q = Map::new();
        q.insert("gtin".into(), json!(self.gtin));
        if let Some(sku) = sku {
            q.insert("sku".into(), json!(sku));
        }
        if let Some((lat, lon)) = self.point {
            q.insert("lat".into(), json!(lat));
            q.insert("lon".into(), json!(lon));
            q.insert("radius_km".into(), json!(self.radius_km));
        }
        Value::Object(q)
    }

    /// `level` as answered, with its location and distance, unless the query's
    /// fulfillment or radius leaves it out.
    fn stock(
        &self,
        mut level: InventoryLevel,
        stale: bool,
        places: &HashMap<&str, &Location>,
    ) -> Option<Stock> {
        if self.fulfillment.is_some_and(|f| level.fulfillment != f) {
            return None;
        }
        if stale {
            level.available = StockAvailable::Unknown;
        }
        let location = places.get(level.location_id.as_str()).map(|l| (*l).clone());
        let distance = match (self.point, location.as_ref().and_then(|l| l.geo)) {
            (Some(p), Some(g)) => Some((distance_km(p, (g.lat, g.lon)) * 10.0).round() / 10.0),
            _ => None,
        };
        if self.point.is_some()
            && level.fulfillment == StockFulfillment::Pickup
            && !distance.is_some_and(|d| d <= self.radius_km)
        {
            return None;
        }
        Some(Stock {
            level,
            location,
            distance_km: distance,
        })
    }
}

/// Whether a partner's stock lookup needs its own sku (it does not take the GTIN).
fn needs_sku(c: &LiveConnector) -> bool {
    c.spec()
        .capabilities
        .get(&Capability::InventoryGet)
        .is_some_and(|cap| {
            !cap.supports.iter().any(|s| s == "gtin")
                && (cap.supports.iter().any(|s| s == "sku") || cap.request.path.contains("{sku}"))
        })
}

/// What the calls of one inventory request gave.
struct Answers {
    catalogs: Vec<SourceResult>,
    locations: Vec<SourceResult>,
    stock: Vec<SourceResult>,
}

impl Api {
    pub(super) async fn inventory(
        &self,
        req: &Request,
        request_id: &str,
    ) -> Result<Response, ApiError> {
        let params = Params::parse(&req.query, &["gtin", "near", "radius_km", "fulfillment"])?;
        let deadline = self.deadline(&params)?;
        let query = StockQuery::parse(&params)?;
        let view = view_of(self);
        let Answers {
            catalogs,
            locations,
            stock: sources,
        } = self.ask(&view, &query, deadline, request_id).await;
        let places: HashMap<&str, &Location> = locations
            .iter()
            .filter_map(|s| s.records.as_ref())
            .flat_map(|r| r.records.iter().filter_map(Record::as_location))
            .map(|l| (l.location_id.as_str(), l))
            .collect();
        if let Some(e) = all_failed("inventory.get", &sources) {
            return Err(e);
        }
        let now = jiff::Timestamp::now();
        let mut stock: Vec<Stock> = Vec::new();
        for source in &sources {
            let Some(records) = &source.records else {
                continue;
            };
            let freshness = source
                .connector
                .spec()
                .capabilities
                .get(&Capability::InventoryGet)
                .and_then(|c| c.freshness_s);
            for level in records
                .records
                .iter()
                .filter_map(Record::as_inventory_level)
            {
                let old = stale(level, freshness, now);
                stock.extend(query.stock(level.clone(), old, &places));
            }
        }
        stock.sort_by(|a, b| {
            let key = |s: &Stock| {
                (
                    s.level.fulfillment != StockFulfillment::Pickup,
                    s.distance_km.map(|d| (d * 10.0) as i64),
                )
            };
            (key(a), &a.level.location_id, &a.level.variant_id).cmp(&(
                key(b),
                &b.level.location_id,
                &b.level.variant_id,
            ))
        });
        let mut all: Vec<SourceResult> = sources;
        all.extend(catalogs.into_iter().filter(|s| !s.answered()));
        envelope(req, &stock, &all, view.generation(), Caching::NoStore)
    }

    /// The calls of one inventory request, all from one view: the catalogs of partners
    /// whose stock lookup needs their sku, then those lookups; the locations (cached for a
    /// day) and the lookups that take the GTIN, at once.
    async fn ask(
        &self,
        view: &View,
        query: &StockQuery,
        deadline: Instant,
        request_id: &str,
    ) -> Answers {
        let gtin = &query.gtin;
        let sku_partners: Vec<String> = view
            .serving(Capability::InventoryGet)
            .iter()
            .filter(|c| needs_sku(c))
            .map(|c| c.partner().to_owned())
            .collect();
        let catalog_calls = view
            .serving(Capability::CatalogSearch)
            .into_iter()
            .filter(|c| sku_partners.iter().any(|p| p == c.partner()))
            .map(|c| {
                let takes_gtin = c
                    .spec()
                    .capabilities
                    .get(&Capability::CatalogSearch)
                    .is_some_and(|cap| cap.supports.iter().any(|s| s == "gtin"));
                let q = if takes_gtin {
                    json!({"gtin": gtin})
                } else {
                    json!({})
                };
                PlannedCall::new(c, Capability::CatalogSearch, q)
            })
            .collect();
        let location_calls = view
            .serving(Capability::LocationsList)
            .into_iter()
            .map(|c| PlannedCall::new(c, Capability::LocationsList, json!({})))
            .collect();
        let (by_sku, direct): (Vec<_>, Vec<_>) = view
            .serving(Capability::InventoryGet)
            .into_iter()
            .partition(|c| needs_sku(c));
        let direct_calls = direct
            .into_iter()
            .map(|c| PlannedCall::new(c, Capability::InventoryGet, query.partner_query(None)))
            .collect();
        let run = |capability, calls| {
            fanout::run(
                &self.cache,
                &self.health,
                &self.metrics,
                capability,
                calls,
                deadline,
                request_id,
            )
        };
        let after_catalogs = async {
            let catalogs = run(Capability::CatalogSearch, catalog_calls).await;
            let skus = skus_of(&catalogs, gtin);
            let calls = by_sku
                .into_iter()
                .map(|c| match skus.get(c.partner()) {
                    Some(sku) => {
                        PlannedCall::new(c, Capability::InventoryGet, query.partner_query(Some(sku)))
                    }
                    None => {
                        let answered = catalogs
                            .iter()
                            .any(|s| s.connector.partner() == c.partner() && s.answered());
                        let reason = if answered {
                            "this partner looks stock up by its own sku, and its catalog has none for this GTIN"
                        } else {
                            "this partner looks stock up by its own sku, and its catalog did not answer"
                        };
                        PlannedCall {
                            connector: c,
                            query: Err(reason.into()),
                        }
                    }
                })
                .collect();
            let stock = run(Capability::InventoryGet, calls).await;
            (catalogs, stock)
        };
        let ((catalogs, by_sku_stock), locations, mut stock) = futures_util::join!(
            after_catalogs,
            run(Capability::LocationsList, location_calls),
            run(Capability::InventoryGet, direct_calls),
        );
        stock.extend(by_sku_stock);
        stock.sort_by(|a, b| {
            crate::registry::rank(&a.connector).cmp(&crate::registry::rank(&b.connector))
        });
        Answers {
            catalogs,
            locations,
            stock,
        }
    }
}

/// Stock whose `as_of` (else `fetched_at`) is older than the freshness budget.
fn stale(level: &InventoryLevel, freshness_s: Option<u32>, now: jiff::Timestamp) -> bool {
    let Some(budget) = freshness_s else {
        return false;
    };
    let when = level
        .provenance
        .as_of
        .as_deref()
        .unwrap_or(&level.provenance.fetched_at);
    let instant = when.parse::<jiff::Timestamp>().ok().or_else(|| {
        when.parse::<jiff::civil::Date>()
            .ok()
            .and_then(|d| d.to_zoned(jiff::tz::TimeZone::UTC).ok())
            .map(|z| z.timestamp())
    });
    match instant {
        Some(t) => now.as_second() - t.as_second() > i64::from(budget),
        None => true,
    }
}

/// Each partner's sku of the variant with this GTIN, from its catalog answer.
fn skus_of(catalogs: &[SourceResult], gtin: &str) -> HashMap<String, String> {
    let mut skus = HashMap::new();
    for source in catalogs {
        let Some(records) = &source.records else {
            continue;
        };
        for p in records.products() {
            for v in p
                .variants
                .iter()
                .filter(|v| v.gtin.as_deref() == Some(gtin))
            {
                if let Some(sku) = &v.sku {
                    skus.entry(source.connector.partner().to_owned())
                        .or_insert_with(|| sku.clone());
                }
            }
        }
    }
    skus
}
