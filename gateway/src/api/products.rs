//! `GET /v1/products` and `GET /v1/products/{product_id}`.
//!
//! A search fans out `catalog.search` with, for each connector, only the filters it
//! `supports` (so different post-filters share one cached partner answer); the gateway
//! applies the other filters to that source's records, merges by GTIN, sorts, and keeps the
//! first `window_items` products as a **window**. Pages are cut from the window; the
//! cursor names the window and an offset, signed, so a walk sees each product once. A
//! first page asked again while its window is fresh is served from the window's
//! pre-serialized page.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use mallgate_connectors::Capability;
use mallgate_schemas::{Availability, Product};
use serde_json::{Map, Value, json};
use tokio::time::Instant;

use super::{
    Api, Caching, Params, Request, Response, all_failed, cacheable, complete, envelope, etag_of,
    statuses, to_json_text, view_of,
};
use crate::FastHash;
use crate::cursor::{Cursor, random_u64};
use crate::fanout::{self, PlannedCall, SourceResult, SourceStatus};
use crate::merge::{RankedProducts, merge_products};
use crate::problem::ApiError;

/// The search's parameters: the documented `catalog.search` query fields, and `cursor`.
static SEARCH_PARAMS: std::sync::LazyLock<Vec<&'static str>> = std::sync::LazyLock::new(|| {
    let mut known = Capability::CatalogSearch.query_fields().to_vec();
    known.push("cursor");
    known
});

/// How long a search window is reused at least (see `new_window`).
const WINDOW_HOLD: Duration = Duration::from_secs(1);

const AVAILABILITY: &[&str] = &[
    "in_stock",
    "limited",
    "out_of_stock",
    "preorder",
    "backorder",
    "unknown",
];

/// A validated search.
#[derive(Debug, Clone, Default)]
struct Search {
    q: Option<String>,
    gtin: Option<String>,
    brand: Option<String>,
    category: Option<String>,
    min_price: Option<i64>,
    max_price: Option<i64>,
    currency: Option<String>,
    availability: Option<Availability>,
    sort: String,
}

impl Search {
    fn parse(params: &Params) -> Result<Self, ApiError> {
        let currency = match params.get("currency") {
            None => None,
            Some(c) if mallgate_connectors::prelude::money::exponent(c).is_some() => {
                Some(c.to_owned())
            }
            Some(_) => {
                return Err(ApiError::param(
                    "currency",
                    "must be an ISO 4217 code such as USD",
                ));
            }
        };
        let search = Self {
            q: params.text("q", 200)?,
            gtin: params.gtin("gtin")?,
            brand: params.text("brand", 100)?,
            category: params.text("category", 100)?,
            min_price: params.integer("min_price", 0, i64::from(u32::MAX) * 1000)?,
            max_price: params.integer("max_price", 0, i64::from(u32::MAX) * 1000)?,
            currency,
            availability: params
                .choice("availability", AVAILABILITY)?
                .and_then(|a| serde_json::from_value(Value::from(a)).ok()),
            sort: params
                .choice("sort", &["relevance", "price_asc", "price_desc", "title"])?
                .unwrap_or_else(|| "relevance".to_owned()),
        };
        for (name, given) in [
            ("min_price", search.min_price.is_some()),
            ("max_price", search.max_price.is_some()),
        ] {
            if given && search.currency.is_none() {
                return Err(ApiError::param(
                    name,
                    "prices compare only within one currency: give `currency` too (amounts are in its minor units)",
                ));
            }
        }
        if search.sort.starts_with("price") && search.currency.is_none() {
            return Err(ApiError::param(
                "sort",
                "price sorts compare only within one currency: give `currency` too",
            ));
        }
        if let (Some(min), Some(max)) = (search.min_price, search.max_price)
            && min > max
        {
            return Err(ApiError::param("min_price", "must not exceed max_price"));
        }
        Ok(search)
    }

    /// The normalized search, which keys windows (cursor and limit excluded).
    fn key(&self) -> String {
        format!(
            "{:?}|{:?}|{:?}|{:?}|{:?}|{:?}|{:?}|{:?}|{}",
            self.q,
            self.gtin,
            self.brand,
            self.category,
            self.min_price,
            self.max_price,
            self.currency,
            self.availability,
            self.sort
        )
    }

    fn field(&self, name: &str) -> Option<Value> {
        match name {
            "q" => self.q.clone().map(Value::from),
            "gtin" => self.gtin.clone().map(Value::from),
            "brand" => self.brand.clone().map(Value::from),
            "category" => self.category.clone().map(Value::from),
            "min_price" => self.min_price.map(Value::from),
            "max_price" => self.max_price.map(Value::from),
            "currency" => self.currency.clone().map(Value::from),
            "availability" => self.availability.and_then(|a| serde_json::to_value(a).ok()),
            "sort" => Some(Value::from(self.sort.clone())),
            _ => None,
        }
    }

    /// The query a connector receives: only the filters it applies itself.
    fn connector_query(&self, supports: &[String]) -> Value {
        let mut map = Map::new();
        for name in supports {
            if let Some(v) = self.field(name) {
                map.insert(name.clone(), v);
            }
        }
        Value::Object(map)
    }

    /// The filters a source did not apply, applied to one of its products.
    fn keeps(&self, p: &Product, supports: &[String]) -> bool {
        let applied = |f: &str| supports.iter().any(|s| s == f);
        let lower = |s: &str| s.to_lowercase();
        if let (Some(q), false) = (&self.q, applied("q")) {
            let text = lower(&format!(
                "{} {} {}",
                p.title,
                p.brand.as_deref().unwrap_or(""),
                p.category.join(" ")
            ));
            if !lower(q).split_whitespace().all(|t| text.contains(t)) {
                return false;
            }
        }
        if let (Some(g), false) = (&self.gtin, applied("gtin"))
            && !p.variants.iter().any(|v| v.gtin.as_deref() == Some(g))
        {
            return false;
        }
        if let (Some(b), false) = (&self.brand, applied("brand"))
            && !p
                .brand
                .as_deref()
                .is_some_and(|x| x.eq_ignore_ascii_case(b))
        {
            return false;
        }
        if let (Some(c), false) = (&self.category, applied("category"))
            && !p.category.iter().any(|x| x.eq_ignore_ascii_case(c))
        {
            return false;
        }
        if let (Some(want), false) = (self.availability, applied("availability"))
            && !offers(p).any(|o| o.availability == want)
        {
            return false;
        }
        if let Some(cur) = &self.currency {
            let prices_applied =
                applied("min_price") && applied("max_price") && applied("currency");
            if !prices_applied {
                let (min, max) = (
                    self.min_price.unwrap_or(0),
                    self.max_price.unwrap_or(i64::MAX),
                );
                if !offers(p).any(|o| {
                    &o.price.currency == cur && (min..=max).contains(&o.price.amount_minor)
                }) {
                    return false;
                }
            }
        }
        true
    }

    /// Relevance: query terms in the title count 3, in the brand 2, in a category 1; then
    /// the number of partners offering it.
    fn relevance(&self, p: &Product) -> i64 {
        let mut score = 0;
        if let Some(q) = &self.q {
            let title = p.title.to_lowercase();
            let brand = p.brand.as_deref().unwrap_or("").to_lowercase();
            let category = p.category.join(" ").to_lowercase();
            for t in q.to_lowercase().split_whitespace() {
                score += 3 * i64::from(title.contains(t))
                    + 2 * i64::from(brand.contains(t))
                    + i64::from(category.contains(t));
            }
        }
        let mut partners: Vec<&str> = offers(p)
            .map(|o| o.provenance.partner_id.as_str())
            .collect();
        partners.sort_unstable();
        partners.dedup();
        score * 100 + partners.len() as i64
    }

    fn min_price(&self, p: &Product) -> Option<i64> {
        let cur = self.currency.as_deref()?;
        offers(p)
            .filter(|o| o.price.currency == cur)
            .map(|o| o.price.amount_minor)
            .min()
    }

    fn sort(&self, products: &mut Vec<Product>) {
        match self.sort.as_str() {
            "price_asc" => products.sort_by(|a, b| {
                let (pa, pb) = (self.min_price(a), self.min_price(b));
                (pa.is_none(), pa, &a.product_id).cmp(&(pb.is_none(), pb, &b.product_id))
            }),
            "price_desc" => products.sort_by(|a, b| {
                let (pa, pb) = (self.min_price(a), self.min_price(b));
                (pb, &a.product_id).cmp(&(pa, &b.product_id))
            }),
            "title" => products.sort_by(|a, b| {
                (a.title.to_lowercase(), &a.product_id)
                    .cmp(&(b.title.to_lowercase(), &b.product_id))
            }),
            _ => {
                // Each product scored once, moved, never cloned.
                let mut scored: Vec<(i64, Product)> = std::mem::take(products)
                    .into_iter()
                    .map(|p| (self.relevance(&p), p))
                    .collect();
                scored.sort_by(|(sa, a), (sb, b)| (sb, &a.product_id).cmp(&(sa, &b.product_id)));
                products.extend(scored.into_iter().map(|(_, p)| p));
            }
        }
    }
}

fn offers(p: &Product) -> impl Iterator<Item = &mallgate_schemas::Offer> {
    p.variants.iter().flat_map(|v| v.offers.iter())
}

/// A serialized page and its ETag.
type Page = (Bytes, String);

/// A merged, sorted search result that pages are cut from.
#[derive(Debug)]
pub struct Window {
    pub id: u64,
    key: String,
    pub generation: u64,
    /// Each product's JSON, serialized once.
    items: Vec<String>,
    sources_json: String,
    pub sources: Vec<SourceStatus>,
    pub complete: bool,
    /// Until when the window may answer a new first page (the shortest freshness of its
    /// sources; one second when a source failed, so a retry comes soon).
    pub fresh_until: Instant,
    /// Unix seconds when its cursors expire.
    expires: i64,
    pages: Mutex<HashMap<(usize, usize), Arc<Page>>>,
}

/// Windows by id, and the current window of each (search, generation).
pub(crate) struct Windows {
    by_id: moka::sync::Cache<u64, Arc<Window>, FastHash>,
    current: moka::sync::Cache<(String, u64), u64, FastHash>,
    ttl: Duration,
}

impl Windows {
    pub(crate) fn purge(&self) {
        self.by_id.invalidate_all();
        self.current.invalidate_all();
    }

    pub(crate) fn new(max_bytes: u64, ttl: Duration) -> Self {
        Self {
            by_id: moka::sync::Cache::builder()
                .max_capacity(max_bytes)
                // The items, the sources, and as much again for the pages cut from them.
                .weigher(|_: &u64, w: &Arc<Window>| {
                    let bytes: usize = 2 * w.items.iter().map(String::capacity).sum::<usize>()
                        + 2 * w.sources_json.capacity()
                        + w.sources.len() * 256
                        + 2048;
                    u32::try_from(bytes).unwrap_or(u32::MAX)
                })
                .time_to_live(ttl)
                .build_with_hasher(FastHash::new()),
            current: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(ttl)
                .build_with_hasher(FastHash::new()),
            ttl,
        }
    }
}

impl Api {
    pub(super) async fn search(
        &self,
        req: &Request,
        request_id: &str,
    ) -> Result<Response, ApiError> {
        let params = Params::parse(&req.query, &SEARCH_PARAMS)?;
        let search = Search::parse(&params)?;
        let limit = params.integer("limit", 1, 100)?.unwrap_or(20) as usize;
        let deadline = self.deadline(&params)?;
        let now_s = jiff::Timestamp::now().as_second();
        let (window, offset) = match params.get("cursor") {
            Some(text) => {
                let cursor = self
                    .cursor_key
                    .open(text, now_s)
                    .map_err(|e| ApiError::param("cursor", e.detail()))?;
                let window = self.windows.by_id.get(&cursor.window).ok_or_else(|| {
                    ApiError::param(
                        "cursor",
                        "the cursor's result window is gone; start the walk again without a cursor",
                    )
                })?;
                if window.key != search.key() {
                    return Err(ApiError::param(
                        "cursor",
                        "the cursor belongs to a search with other filters or sort",
                    ));
                }
                (window, cursor.offset)
            }
            None => (self.first_window(&search, deadline, request_id).await?, 0),
        };
        let page = self.page(&window, offset, limit);
        Ok(cacheable(
            req,
            page.0.clone(),
            &page.1,
            Some(window.fresh_until),
        ))
    }

    /// The window of a first page: the current one while it is fresh, else a new one.
    async fn first_window(
        &self,
        search: &Search,
        deadline: Instant,
        request_id: &str,
    ) -> Result<Arc<Window>, ApiError> {
        let view = view_of(self);
        let index = (search.key(), view.generation());
        if let Some(w) = self
            .windows
            .current
            .get(&index)
            .and_then(|id| self.windows.by_id.get(&id))
            && Instant::now() < w.fresh_until
        {
            return Ok(w);
        }
        let calls = view
            .serving(Capability::CatalogSearch)
            .into_iter()
            .map(|c| {
                let supports = supports(&c, Capability::CatalogSearch);
                let query = search.connector_query(supports);
                PlannedCall::new(c, Capability::CatalogSearch, query)
            })
            .collect();
        let sources = fanout::run(
            &self.cache,
            &self.health,
            &self.metrics,
            Capability::CatalogSearch,
            calls,
            deadline,
            request_id,
        )
        .await;
        if let Some(e) = all_failed("catalog.search", &sources) {
            return Err(e);
        }
        let mut products = merged(&sources, |c, p| {
            search.keeps(p, supports(c, Capability::CatalogSearch))
        });
        search.sort(&mut products);
        products.truncate(self.config.cache.window_items);
        let window = self.new_window(search.key(), view.generation(), &products, &sources)?;
        self.windows.by_id.insert(window.id, Arc::clone(&window));
        self.windows.current.insert(index, window.id);
        Ok(window)
    }

    fn new_window(
        &self,
        key: String,
        generation: u64,
        products: &[Product],
        sources: &[SourceResult],
    ) -> Result<Arc<Window>, ApiError> {
        let now = Instant::now();
        let complete = complete(sources);
        // A window is fresh as long as its sources' records. One built of records served
        // while their refresh runs (stale-while-revalidate) is stale as it is made: it is
        // held a second (never past the policy's stale-while-revalidate), or every request
        // until the refresh lands would merge the same records again (a burst of CPU for
        // each hot search at each expiry, as long as the slowest partner takes to answer).
        // Incomplete windows are held a second too.
        let hold = now + WINDOW_HOLD;
        let revalidating = sources.iter().filter_map(|s| s.revalidating_until).min();
        let fresh_until = if !complete {
            hold
        } else if let Some(until) = revalidating {
            hold.min(until)
        } else {
            sources
                .iter()
                .filter_map(|s| s.fresh_until)
                .min()
                .unwrap_or(now)
        };
        self.metrics.window_built();
        let statuses = statuses(sources);
        Ok(Arc::new(Window {
            id: random_u64(),
            key,
            generation,
            items: products
                .iter()
                .map(to_json_text)
                .collect::<Result<_, _>>()?,
            sources_json: to_json_text(&statuses)?,
            sources: statuses,
            complete,
            fresh_until,
            expires: jiff::Timestamp::now().as_second()
                + i64::try_from(self.windows.ttl.as_secs()).unwrap_or(i64::MAX / 2),
            pages: Mutex::new(HashMap::new()),
        }))
    }

    /// A page of a window: body and ETag, serialized once per (offset, limit).
    fn page(&self, window: &Window, offset: usize, limit: usize) -> Arc<(Bytes, String)> {
        let mut pages = window.pages.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(p) = pages.get(&(offset, limit)) {
            return Arc::clone(p);
        }
        let end = (offset + limit).min(window.items.len());
        let start = offset.min(end);
        let next = (end < window.items.len()).then(|| {
            self.cursor_key.sign(Cursor {
                window: window.id,
                offset: end,
                expires: window.expires,
            })
        });
        let mut body = String::with_capacity(
            window.items[start..end]
                .iter()
                .map(String::len)
                .sum::<usize>()
                + window.sources_json.len()
                + 256,
        );
        body.push_str("{\"data\":[");
        body.push_str(&window.items[start..end].join(","));
        body.push_str("],\"sources\":");
        body.push_str(&window.sources_json);
        body.push_str(&format!(
            ",\"complete\":{},\"generation\":{}",
            window.complete, window.generation
        ));
        if let Some(next) = next {
            body.push_str(&format!(",\"next_cursor\":\"{next}\""));
        }
        body.push('}');
        let etag = etag_of(body.as_bytes());
        let page = Arc::new((Bytes::from(body), etag));
        if pages.len() < 64 {
            pages.insert((offset, limit), Arc::clone(&page));
        }
        page
    }

    pub(super) async fn product(
        &self,
        req: &Request,
        id: &str,
        request_id: &str,
    ) -> Result<Response, ApiError> {
        let params = Params::parse(&req.query, &[])?;
        let deadline = self.deadline(&params)?;
        let view = view_of(self);
        let not_found = || ApiError::NotFound {
            kind: "product",
            detail: format!("no partner knows a product `{id}`"),
        };
        let (partner, native) = id.split_once(':').ok_or_else(|| {
            ApiError::param(
                "product_id",
                "must be gtin:<14 digits> or <partner>:<native id>",
            )
        })?;
        let (capability, calls): (Capability, Vec<PlannedCall>) = if partner == "gtin" {
            let gtin = mallgate_connectors::prelude::gtin::normalize(native)
                .gtin14
                .filter(|g| g == native)
                .ok_or_else(|| {
                    ApiError::param(
                        "product_id",
                        "gtin: ids carry 14 digits with a valid check digit",
                    )
                })?;
            let search = Search {
                gtin: Some(gtin),
                sort: "relevance".into(),
                ..Search::default()
            };
            let calls = view
                .serving(Capability::CatalogSearch)
                .into_iter()
                .map(|c| {
                    let q = search.connector_query(supports(&c, Capability::CatalogSearch));
                    PlannedCall::new(c, Capability::CatalogSearch, q)
                })
                .collect();
            (Capability::CatalogSearch, calls)
        } else {
            let owned: Vec<_> = view
                .connectors()
                .iter()
                .filter(|c| c.partner() == partner)
                .cloned()
                .collect();
            if owned.is_empty() {
                return Err(not_found());
            }
            let getters: Vec<_> = owned
                .iter()
                .filter(|c| c.serves(Capability::CatalogGet))
                .cloned()
                .collect();
            if getters.is_empty() {
                // No lookup by id: the partner's catalog, filtered here.
                let calls: Vec<PlannedCall> = owned
                    .into_iter()
                    .filter(|c| c.serves(Capability::CatalogSearch))
                    .map(|c| PlannedCall::new(c, Capability::CatalogSearch, json!({})))
                    .collect();
                if calls.is_empty() {
                    // A partner without a catalog (a stock feed, a carrier) knows no
                    // product: not found, not an outage.
                    return Err(ApiError::NotFound {
                        kind: "product",
                        detail: format!(
                            "no partner knows a product `{id}`: partner `{partner}` serves no catalog"
                        ),
                    });
                }
                (Capability::CatalogSearch, calls)
            } else {
                let calls = getters
                    .into_iter()
                    .map(|c| PlannedCall::new(c, Capability::CatalogGet, json!({"id": native})))
                    .collect();
                (Capability::CatalogGet, calls)
            }
        };
        let sources = fanout::run(
            &self.cache,
            &self.health,
            &self.metrics,
            capability,
            calls,
            deadline,
            request_id,
        )
        .await;
        if let Some(e) = all_failed(capability.name(), &sources) {
            return Err(e);
        }
        let products = merged(&sources, |_, _| true);
        // A native id resolves to its product whatever id the product carries (a GTIN
        // gives it `gtin:…`): the product, a variant or an offer may be the one asked.
        let found = products.into_iter().find(|p| {
            p.product_id == id
                || p.variants
                    .iter()
                    .any(|v| v.variant_id == id || v.offers.iter().any(|o| o.offer_id == id))
        });
        let Some(product) = found else {
            return Err(not_found());
        };
        envelope(
            req,
            &product,
            &sources,
            view.generation(),
            Caching::Validated,
        )
    }
}

/// The filters a connector applies itself for a capability.
fn supports(c: &crate::registry::LiveConnector, capability: Capability) -> &[String] {
    c.spec()
        .capabilities
        .get(&capability)
        .map_or(&[], |cap| cap.supports.as_slice())
}

/// The products of every answering source, each source's kept by `keep`, merged. The
/// records were typed once, where they were mapped.
fn merged(
    sources: &[SourceResult],
    keep: impl Fn(&crate::registry::LiveConnector, &Product) -> bool,
) -> Vec<Product> {
    let ranked: Vec<RankedProducts<'_>> = sources
        .iter()
        .filter_map(|s| {
            let records = s.records.as_ref()?;
            Some(RankedProducts {
                rank: crate::registry::rank(&s.connector),
                products: records
                    .products()
                    .filter(|p| keep(&s.connector, p))
                    .collect(),
            })
        })
        .collect();
    merge_products(&ranked)
}
