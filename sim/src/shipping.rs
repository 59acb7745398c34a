//! The carriers' side of the world: parcels with tracking histories that cover every
//! normalized status (exceptions, returns, cancellations and unmapped codes included), and
//! quotes by billable weight and zone. Like the catalog, this is the truth in unified
//! terms; ParcelPost and SwiftShip render it in their dialects.

use mallgate_schemas::TrackingStatus;

use crate::rng::{Rng, label};
use crate::world::{CITIES, Partner, check_digit};

/// One step of a parcel's journey. Each carrier words it in its own vocabulary
/// (`partners::parcelpost::phrase`, `partners::swiftship::code`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Step {
    LabelCreated,
    PickedUp,
    DepartedFacility,
    ArrivedFacility,
    InTransit,
    OutForDelivery,
    DeliveryAttempted,
    AvailableForPickup,
    Delivered,
    Exception,
    ReturnToSender,
    Cancelled,
    Failure,
    /// A scan the carrier's documented vocabulary does not have: maps to `unknown`.
    Unmapped,
}

impl Step {
    /// The normalized status this step means.
    pub fn status(self) -> TrackingStatus {
        match self {
            Self::LabelCreated => TrackingStatus::LabelCreated,
            Self::PickedUp => TrackingStatus::PickedUp,
            Self::DepartedFacility | Self::ArrivedFacility | Self::InTransit => {
                TrackingStatus::InTransit
            }
            Self::OutForDelivery => TrackingStatus::OutForDelivery,
            Self::DeliveryAttempted => TrackingStatus::DeliveryAttempted,
            Self::AvailableForPickup => TrackingStatus::AvailableForPickup,
            Self::Delivered => TrackingStatus::Delivered,
            Self::Exception => TrackingStatus::Exception,
            Self::ReturnToSender => TrackingStatus::ReturnToSender,
            Self::Cancelled => TrackingStatus::Cancelled,
            Self::Failure => TrackingStatus::Failure,
            Self::Unmapped => TrackingStatus::Unknown,
        }
    }
}

/// A place a scan happened: an index into the world's cities.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Place(pub usize);

impl Place {
    pub fn city(self) -> &'static str {
        CITIES[self.0].0
    }
    pub fn region(self) -> &'static str {
        CITIES[self.0].1
    }
    pub fn postal_code(self) -> &'static str {
        CITIES[self.0].2
    }
    pub fn time_zone(self) -> &'static str {
        CITIES[self.0].5
    }
}

/// One event of a parcel's history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrackEvent {
    pub step: Step,
    /// When, as an instant.
    pub unix_s: i64,
    /// Where; `None` for scans without a place (carriers leave it out).
    pub place: Option<Place>,
    /// The zone the carrier writes local times in: the place's, else the last known one.
    pub time_zone: &'static str,
    /// Whether the carrier gives a time of day (ParcelPost drops it on some lines).
    pub has_time: bool,
}

/// A parcel a carrier tracks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shipment {
    pub carrier: Partner,
    pub tracking_number: String,
    pub weight_g: u32,
    /// Oldest first. Several events can share an instant.
    pub events: Vec<TrackEvent>,
    /// Whether the carrier adds the UTC offset to local times (SwiftShip, sometimes).
    pub with_offset: bool,
}

impl Shipment {
    /// The normalized status now: the newest event's.
    pub fn status(&self) -> TrackingStatus {
        self.events
            .last()
            .map_or(TrackingStatus::Unknown, |e| e.step.status())
    }
}

/// The stories parcels tell: together they end in every normalized status.
const STORIES: &[&[Step]] = {
    use Step::*;
    &[
        &[
            LabelCreated,
            PickedUp,
            DepartedFacility,
            ArrivedFacility,
            OutForDelivery,
            Delivered,
        ],
        &[LabelCreated, PickedUp, DepartedFacility, InTransit],
        &[
            LabelCreated,
            PickedUp,
            DepartedFacility,
            ArrivedFacility,
            OutForDelivery,
        ],
        &[
            LabelCreated,
            PickedUp,
            ArrivedFacility,
            OutForDelivery,
            DeliveryAttempted,
        ],
        &[
            LabelCreated,
            PickedUp,
            ArrivedFacility,
            OutForDelivery,
            DeliveryAttempted,
            AvailableForPickup,
        ],
        &[LabelCreated, PickedUp, DepartedFacility, Exception],
        &[
            LabelCreated,
            PickedUp,
            ArrivedFacility,
            OutForDelivery,
            DeliveryAttempted,
            AvailableForPickup,
            ReturnToSender,
        ],
        &[LabelCreated],
        &[LabelCreated, PickedUp],
        &[LabelCreated, Cancelled],
        &[
            LabelCreated,
            PickedUp,
            DepartedFacility,
            OutForDelivery,
            Failure,
        ],
        &[LabelCreated, PickedUp, ArrivedFacility, Unmapped],
    ]
};

/// Parcels per story per carrier.
const PER_STORY: usize = 4;

/// The instant the world's shipping starts: 2026-11-16T08:00:00Z.
pub const SHIPPING_EPOCH_S: i64 = 1_794_816_000;

fn tracking_number(carrier: Partner, n: u64) -> String {
    match carrier {
        Partner::ParcelPost => {
            let body = format!("9400{:017}", 1_100_000_000_000 + n * 7919);
            let check = check_digit(&body);
            format!("{body}{check}")
        }
        _ => {
            let serial = 3_000_000 + n * 131;
            format!("1ZSW4F7W03{serial:07}{}", serial % 10)
        }
    }
}

/// Every parcel of a carrier, deterministic for the seed.
pub fn generate(seed: u64) -> Vec<Shipment> {
    let mut out = Vec::new();
    for carrier in [Partner::ParcelPost, Partner::SwiftShip] {
        let mut rng = Rng::derive(seed, &[label("parcels"), label(carrier.id())]);
        for (story_index, story) in STORIES.iter().enumerate() {
            for k in 0..PER_STORY {
                let n = (story_index * PER_STORY + k) as u64;
                let origin = rng.below(CITIES.len() as u64) as usize;
                let mut destination = rng.below(CITIES.len() as u64) as usize;
                if destination == origin {
                    destination = (destination + 1) % CITIES.len();
                }
                let hub = (origin + destination + 3) % CITIES.len();
                let mut t =
                    SHIPPING_EPOCH_S + rng.below(96) as i64 * 3600 + rng.below(60) as i64 * 60;
                let mut events: Vec<TrackEvent> = Vec::new();
                let mut zone = CITIES[origin].5;
                for (i, step) in story.iter().copied().enumerate() {
                    if i > 0 {
                        // Some scans share the previous instant.
                        if !rng.chance(0.15) {
                            t += 1800 + rng.below(14 * 3600) as i64;
                        }
                    }
                    let place = match step {
                        Step::LabelCreated if rng.chance(0.5) => None,
                        Step::InTransit | Step::Unmapped => None,
                        Step::LabelCreated | Step::PickedUp | Step::Cancelled => {
                            Some(Place(origin))
                        }
                        Step::DepartedFacility if i < 3 => Some(Place(origin)),
                        Step::DepartedFacility | Step::ArrivedFacility | Step::Exception => {
                            Some(Place(hub))
                        }
                        Step::ReturnToSender => Some(Place(destination)),
                        _ => Some(Place(destination)),
                    };
                    if let Some(p) = place {
                        zone = p.time_zone();
                    }
                    let has_time =
                        !matches!(step, Step::LabelCreated | Step::Cancelled) || rng.chance(0.5);
                    events.push(TrackEvent {
                        step,
                        unix_s: t,
                        place,
                        time_zone: zone,
                        has_time,
                    });
                }
                out.push(Shipment {
                    carrier,
                    tracking_number: tracking_number(carrier, n),
                    weight_g: 200 + rng.below(12_000) as u32,
                    events,
                    with_offset: n.is_multiple_of(2),
                });
            }
        }
    }
    out
}

/// A well-formed tracking number the carrier has never issued.
pub fn unknown_tracking_number(carrier: Partner) -> String {
    tracking_number(carrier, 7_001)
}

/// The zone (1..=8) between two ZIP codes: the distance of their three-digit prefixes.
pub fn zone(from_zip: &str, to_zip: &str) -> u32 {
    let prefix = |z: &str| z.get(..3).and_then(|p| p.parse::<i64>().ok()).unwrap_or(0);
    let d = (prefix(from_zip) - prefix(to_zip)).unsigned_abs();
    (1 + d / 125).min(8) as u32
}

/// One carrier service's quote for a shipment (all its parcels).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quote {
    pub carrier: Partner,
    pub service_code: &'static str,
    /// The plain name (carriers may render it escaped).
    pub service_name: &'static str,
    /// Base (transportation) charge, USD cents.
    pub base_cents: i64,
    /// Fuel surcharge, USD cents (SwiftShip only).
    pub fuel_cents: i64,
    pub total_cents: i64,
    pub transit_days: (u32, u32),
    pub guaranteed: bool,
    /// The service cannot quote this shipment: the carrier's own words. ParcelPost still
    /// lists it, at `0.00`.
    pub failed: Option<&'static str>,
}

struct Service {
    code: &'static str,
    name: &'static str,
    base: i64,
    per_lb: i64,
    per_lb_zone: i64,
    guaranteed: bool,
}

const PARCELPOST: &[Service] = &[
    Service {
        code: "1",
        name: "Priority Mail 2-Day™",
        base: 795,
        per_lb: 95,
        per_lb_zone: 22,
        guaranteed: false,
    },
    Service {
        code: "3",
        name: "Priority Mail Express 1-Day™",
        base: 2_850,
        per_lb: 240,
        per_lb_zone: 55,
        guaranteed: true,
    },
    Service {
        code: "1058",
        name: "USPS Ground Advantage™",
        base: 540,
        per_lb: 70,
        per_lb_zone: 15,
        guaranteed: false,
    },
];

const SWIFTSHIP: &[Service] = &[
    Service {
        code: "01",
        name: "Next Day Air",
        base: 3_120,
        per_lb: 310,
        per_lb_zone: 60,
        guaranteed: true,
    },
    Service {
        code: "02",
        name: "2nd Day Air",
        base: 1_890,
        per_lb: 180,
        per_lb_zone: 35,
        guaranteed: true,
    },
    Service {
        code: "03",
        name: "Ground",
        base: 1_015,
        per_lb: 60,
        per_lb_zone: 18,
        guaranteed: false,
    },
];

/// Billable pounds of a parcel: whole pounds, rounded up, at least one.
pub fn billable_pounds(weight_g: u32) -> i64 {
    // 1 lb = 453.59237 g exactly.
    (u64::from(weight_g) * 100_000).div_ceil(45_359_237).max(1) as i64
}

fn transit(carrier: Partner, code: &str, zone: u32) -> (u32, u32) {
    match (carrier, code) {
        (Partner::ParcelPost, "1") if zone <= 4 => (1, 2),
        (Partner::ParcelPost, "1") => (2, 3),
        (Partner::ParcelPost, "3") => (1, 2),
        (Partner::ParcelPost, _) => (2, 5),
        (_, "01") => (1, 1),
        (_, "02") => (2, 2),
        _ => (zone.div_ceil(2), zone.div_ceil(2)),
    }
}

/// Every service's quote from `from_zip` to `to_zip` for parcels of these weights, in the
/// carrier's service order.
pub fn quotes(carrier: Partner, from_zip: &str, to_zip: &str, weights_g: &[u32]) -> Vec<Quote> {
    let pounds: Vec<i64> = weights_g.iter().map(|w| billable_pounds(*w)).collect();
    quotes_for_pounds(carrier, from_zip, to_zip, &pounds)
}

/// [`quotes`] for parcels already in billable pounds.
pub fn quotes_for_pounds(
    carrier: Partner,
    from_zip: &str,
    to_zip: &str,
    pounds: &[i64],
) -> Vec<Quote> {
    let zone = zone(from_zip, to_zip);
    let services = if carrier == Partner::ParcelPost {
        PARCELPOST
    } else {
        SWIFTSHIP
    };
    services
        .iter()
        .map(|s| {
            let base: i64 = pounds
                .iter()
                .map(|lbs| s.base + lbs * (s.per_lb + i64::from(zone) * s.per_lb_zone))
                .sum();
            let fuel = if carrier == Partner::SwiftShip {
                (base * 14 + 99) / 100
            } else {
                0
            };
            // Express does not reach the far zones, nor take parcels over 70 lb.
            let failed = (carrier == Partner::ParcelPost
                && s.code == "3"
                && (zone >= 7 || pounds.iter().any(|lbs| *lbs > 70)))
            .then_some("Priority Mail Express is not available to this destination.");
            Quote {
                carrier,
                service_code: s.code,
                service_name: s.name,
                base_cents: base,
                fuel_cents: fuel,
                total_cents: base + fuel,
                transit_days: transit(carrier, s.code, zone),
                guaranteed: s.guaranteed,
                failed,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histories_cover_every_status_and_are_ordered() {
        let parcels = generate(7);
        for carrier in [Partner::ParcelPost, Partner::SwiftShip] {
            let mine: Vec<&Shipment> = parcels.iter().filter(|s| s.carrier == carrier).collect();
            for status in [
                TrackingStatus::LabelCreated,
                TrackingStatus::PickedUp,
                TrackingStatus::InTransit,
                TrackingStatus::OutForDelivery,
                TrackingStatus::AvailableForPickup,
                TrackingStatus::DeliveryAttempted,
                TrackingStatus::Delivered,
                TrackingStatus::Exception,
                TrackingStatus::ReturnToSender,
                TrackingStatus::Failure,
                TrackingStatus::Cancelled,
                TrackingStatus::Unknown,
            ] {
                assert!(
                    mine.iter().any(|s| s.status() == status),
                    "{carrier:?} has a parcel ending {status:?}"
                );
            }
            for s in &mine {
                assert!(s.events.windows(2).all(|w| w[0].unix_s <= w[1].unix_s));
            }
            assert!(
                mine.iter()
                    .any(|s| s.events.windows(2).any(|w| w[0].unix_s == w[1].unix_s)),
                "some scans share an instant"
            );
            let unknown = unknown_tracking_number(carrier);
            assert!(mine.iter().all(|s| s.tracking_number != unknown));
            for number in mine
                .iter()
                .map(|s| s.tracking_number.as_str())
                .chain([unknown.as_str()])
            {
                let well_formed = match carrier {
                    Partner::ParcelPost => {
                        number.len() == 22 && number.bytes().all(|b| b.is_ascii_digit())
                    }
                    _ => number.len() == 18 && number.starts_with("1Z"),
                };
                assert!(well_formed, "{number}");
            }
        }
        assert_eq!(parcels, generate(7));
    }

    #[test]
    fn quotes_grow_with_weight_and_zone_and_express_fails_far_away() {
        assert_eq!(billable_pounds(453), 1);
        assert_eq!(billable_pounds(454), 2);
        assert_eq!(zone("50309", "50311"), 1);
        assert_eq!(zone("02108", "98101"), 8);
        let near = quotes(Partner::ParcelPost, "50309", "60601", &[1000]);
        let heavy = quotes(Partner::ParcelPost, "50309", "60601", &[5000]);
        let far = quotes(Partner::ParcelPost, "02108", "98101", &[1000]);
        for ((n, h), f) in near.iter().zip(&heavy).zip(&far) {
            assert!(n.total_cents < h.total_cents);
            assert!(n.total_cents < f.total_cents);
        }
        assert!(near.iter().all(|q| q.failed.is_none()));
        assert!(far.iter().any(|q| q.failed.is_some()));
        let swift = quotes(Partner::SwiftShip, "50309", "60601", &[1000, 2000]);
        assert!(swift.iter().all(|q| q.fuel_cents > 0 && q.failed.is_none()));
    }
}
