//! Serde types mirroring `schemas/unified/*.schema.json` field for field. The schemas are the
//! contract; these types are how Rust code builds and reads it. Optional fields are omitted
//! when absent, so a value round-trips through JSON unchanged.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// An amount in integer minor units of an ISO 4217 currency.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Money {
    pub amount_minor: i64,
    /// ISO 4217 alphabetic code.
    pub currency: String,
    /// The partner's exact amount in major units, present only when it is finer than the
    /// currency's minor unit (then `amount_minor` is rounded half away from zero).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exact: Option<String>,
}

/// A value and unit exactly as the partner gave them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OriginalMeasure {
    pub value: String,
    pub unit: String,
}

/// A weight normalized to grams.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Weight {
    pub grams: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub original: Option<OriginalMeasure>,
}

/// Dimensions as the partner gave them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OriginalDimensions {
    pub length: String,
    pub width: String,
    pub height: String,
    pub unit: String,
}

/// Length, width and height normalized to millimetres.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Dimensions {
    pub length_mm: f64,
    pub width_mm: f64,
    pub height_mm: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub original: Option<OriginalDimensions>,
}

/// Something a connector noticed while normalizing a record; the record is kept.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Warning {
    pub code: String,
    pub message: String,
    /// The unified field the warning is about, as a JSON pointer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

/// Where a record came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Provenance {
    pub partner_id: String,
    pub connector_id: String,
    pub connector_version: u32,
    /// The partner's own reference of the record.
    pub source_ref: String,
    /// RFC 3339 with offset.
    pub fetched_at: String,
    /// When the partner says the data was true; absent means `fetched_at`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub as_of: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<Warning>,
}

/// WGS 84 coordinates in decimal degrees.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GeoPoint {
    pub lat: f64,
    pub lon: f64,
}

/// How precisely a partner stated a time. A zone is never invented.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventTimeKind {
    /// RFC 3339 with an offset: a real instant.
    Zoned,
    /// Wall-clock time with no known zone.
    Local,
    /// A calendar date only.
    Date,
}

/// A partner's time as precise as the partner said it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventTime {
    pub kind: EventTimeKind,
    pub value: String,
    /// The IANA zone the time was read in, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_zone: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Address {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub lines: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub city: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub postal_code: Option<String>,
    /// ISO 3166-1 alpha-2.
    pub country: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LocationKind {
    Store,
    Warehouse,
    PickupPoint,
}

/// How stock at a location reaches a shopper.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StockFulfillment {
    /// Collected by the shopper at the location.
    Pickup,
    /// Shipped from the location.
    Ship,
}

/// A store, warehouse or pickup point.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Location {
    pub location_id: String,
    pub kind: LocationKind,
    pub name: String,
    pub address: Address,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub geo: Option<GeoPoint>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_zone: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fulfillment: Vec<StockFulfillment>,
    pub provenance: Provenance,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Seller {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    pub name: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Availability {
    InStock,
    Limited,
    OutOfStock,
    Preorder,
    Backorder,
    Unknown,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Condition {
    New,
    Refurbished,
    Used,
    OpenBox,
}

/// How an offer reaches a shopper.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Fulfillment {
    Ship,
    Pickup,
    SameDayDelivery,
}

/// One partner's offer of one variant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Offer {
    pub offer_id: String,
    pub seller: Seller,
    pub availability: Availability,
    pub condition: Condition,
    pub price: Money,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub list_price: Option<Money>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fulfillment: Vec<Fulfillment>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    pub provenance: Provenance,
}

/// A purchasable variant of a product.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Variant {
    /// `gtin:<14 digits>` with a valid GTIN, else `<partner>:<native id>`.
    pub variant_id: String,
    /// A GTIN-14 with a verified check digit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gtin: Option<String>,
    /// The code as the partner sent it, when it differs from `gtin` or failed validation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gtin_raw: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sku: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub options: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<Weight>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dimensions: Option<Dimensions>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_url: Option<String>,
    pub offers: Vec<Offer>,
}

/// A group of variants with shared descriptive fields.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Product {
    pub product_id: String,
    pub title: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub brand: Option<String>,
    /// Category path, broadest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub category: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub image_urls: Vec<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub attributes: BTreeMap<String, String>,
    pub variants: Vec<Variant>,
    /// Where the descriptive fields come from; each offer keeps its own.
    pub provenance: Provenance,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StockBand {
    Low,
    Some,
}

/// What a shopper can buy now at one location.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum StockAvailable {
    /// An exact count; negative when the partner oversold.
    Exact { quantity: i64 },
    /// At least this many.
    AtLeast { quantity: i64 },
    /// Only a band is known.
    Band { band: StockBand },
    /// Unknown, including stock older than its freshness budget.
    Unknown,
}

/// Stock of one variant at one location.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InventoryLevel {
    pub variant_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gtin: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sku: Option<String>,
    pub location_id: String,
    pub fulfillment: StockFulfillment,
    pub available: StockAvailable,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_hand: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub committed: Option<i64>,
    /// Ordered but not arrived; never counts as available.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub incoming: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restock_date: Option<String>,
    pub provenance: Provenance,
}

/// A parcel to quote.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Parcel {
    pub weight_g: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub length_mm: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub width_mm: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub height_mm: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub declared_value: Option<Money>,
}

/// The body of `POST /v1/shipping/rates`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShippingRateRequest {
    pub from: Address,
    pub to: Address,
    pub parcels: Vec<Parcel>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChargeKind {
    Base,
    Fuel,
    Surcharge,
    Insurance,
    Tax,
    Discount,
    Other,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Charge {
    pub kind: ChargeKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    pub amount: Money,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TransitDays {
    pub min: u32,
    pub max: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RateTag {
    Cheapest,
    Fastest,
}

/// A carrier's quote for one service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShippingRate {
    pub carrier: String,
    pub service_code: String,
    pub service_name: String,
    pub total: Money,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub charges: Vec<Charge>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transit_days: Option<TransitDays>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub estimated_delivery: Option<String>,
    pub guaranteed: bool,
    /// Set by the gateway across carriers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<RateTag>,
    pub provenance: Provenance,
}

/// The normalized tracking status of partners.md; unmapped carrier codes are `Unknown`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TrackingStatus {
    LabelCreated,
    PickedUp,
    InTransit,
    OutForDelivery,
    AvailableForPickup,
    DeliveryAttempted,
    Delivered,
    Exception,
    ReturnToSender,
    Failure,
    Cancelled,
    NotFound,
    Unknown,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventLocation {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub city: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub postal_code: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub country: Option<String>,
}

/// One scan or status change of a parcel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrackingEvent {
    pub status: TrackingStatus,
    /// The carrier's own code or phrase.
    pub raw_code: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    pub time: EventTime,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<EventLocation>,
}

/// A parcel's tracking, events newest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tracking {
    pub carrier: String,
    pub tracking_number: String,
    pub status: TrackingStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub estimated_delivery: Option<String>,
    pub events: Vec<TrackingEvent>,
    pub provenance: Provenance,
}
