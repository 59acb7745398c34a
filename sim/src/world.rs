//! The seeded world every simulated partner renders: products (many sold by two or three
//! partners under different ids and GTIN spellings), stores and warehouses, and stock that
//! changes as a deterministic function of the clock. It exists in unified terms first;
//! each partner *renders* it in its dialect, so tests compare what comes back with this
//! truth.

use crate::rng::{Rng, label};

/// The simulated partners.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Partner {
    Voltmart,
    Threadline,
    Acme,
    Northwind,
    ParcelPost,
    SwiftShip,
}

impl Partner {
    pub const ALL: [Partner; 6] = [
        Self::Voltmart,
        Self::Threadline,
        Self::Acme,
        Self::Northwind,
        Self::ParcelPost,
        Self::SwiftShip,
    ];

    /// The partner id used in connectors and the control API.
    pub fn id(self) -> &'static str {
        match self {
            Self::Voltmart => "voltmart",
            Self::Threadline => "threadline",
            Self::Acme => "acme",
            Self::Northwind => "northwind",
            Self::ParcelPost => "parcelpost",
            Self::SwiftShip => "swiftship",
        }
    }

    pub fn from_id(id: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.id() == id)
    }
}

/// What a product is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Department {
    Electronics,
    Apparel,
}

/// One sellable variant (a product without options has exactly one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Variant {
    /// Option values (`Size`, `Color`...) in order; empty for single-variant products.
    pub options: Vec<(String, String)>,
    /// The 12-digit UPC-A of the variant, valid; `None` for items without a valid code.
    pub upc: Option<String>,
    /// What the partner sends when the code is not valid (a mistyped check digit).
    pub bad_code: Option<String>,
    pub weight_g: u32,
}

impl Variant {
    /// The GTIN-14 the mall should see: `00` + UPC-A.
    pub fn gtin14(&self) -> Option<String> {
        self.upc.as_ref().map(|u| format!("00{u}"))
    }
}

/// A partner's listing of a product: its own id and price.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listing {
    pub partner: Partner,
    /// The partner's native id of the product (Voltmart: an integer sku).
    pub native_id: String,
    /// Current price, USD cents.
    pub price_cents: i64,
    /// Regular (list) price, USD cents.
    pub list_price_cents: i64,
    /// When the partner last changed the listing (Unix seconds).
    pub updated_s: i64,
}

/// A product in unified terms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Product {
    pub index: usize,
    pub department: Department,
    pub title: String,
    pub brand: String,
    pub category: Vec<String>,
    pub description: String,
    pub variants: Vec<Variant>,
    pub listings: Vec<Listing>,
}

impl Product {
    pub fn listing(&self, partner: Partner) -> Option<&Listing> {
        self.listings.iter().find(|l| l.partner == partner)
    }
}

/// Store or warehouse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LocationKind {
    Store,
    Warehouse,
}

/// A partner's store or warehouse.
#[derive(Debug, Clone, PartialEq)]
pub struct Location {
    pub partner: Partner,
    pub native_id: u32,
    pub kind: LocationKind,
    pub name: String,
    pub street: String,
    pub city: String,
    pub region: String,
    pub postal_code: String,
    pub lat: f64,
    pub lon: f64,
    pub time_zone: String,
}

/// The world.
#[derive(Debug, Clone)]
pub struct World {
    pub seed: u64,
    pub products: Vec<Product>,
    pub locations: Vec<Location>,
    /// Parcels ParcelPost and SwiftShip track.
    pub parcels: Vec<crate::shipping::Shipment>,
}

/// How many products a world has.
pub const PRODUCTS: usize = 3000;

/// Stock changes every this many seconds of the simulated clock.
pub const STOCK_PERIOD_S: i64 = 300;

/// The cities stores, warehouses and parcel scans are in: name, region, ZIP, lat, lon, zone.
pub const CITIES: &[(&str, &str, &str, f64, f64, &str)] = &[
    (
        "Des Moines",
        "IA",
        "50309",
        41.5868,
        -93.6250,
        "America/Chicago",
    ),
    (
        "Chicago",
        "IL",
        "60601",
        41.8864,
        -87.6186,
        "America/Chicago",
    ),
    (
        "Minneapolis",
        "MN",
        "55401",
        44.9833,
        -93.2667,
        "America/Chicago",
    ),
    (
        "Denver",
        "CO",
        "80202",
        39.7525,
        -104.9995,
        "America/Denver",
    ),
    (
        "Phoenix",
        "AZ",
        "85004",
        33.4510,
        -112.0690,
        "America/Phoenix",
    ),
    (
        "Seattle",
        "WA",
        "98101",
        47.6101,
        -122.3344,
        "America/Los_Angeles",
    ),
    (
        "Los Angeles",
        "CA",
        "90012",
        34.0537,
        -118.2428,
        "America/Los_Angeles",
    ),
    (
        "Atlanta",
        "GA",
        "30303",
        33.7537,
        -84.3863,
        "America/New_York",
    ),
    (
        "New York",
        "NY",
        "10001",
        40.7506,
        -73.9972,
        "America/New_York",
    ),
    (
        "Boston",
        "MA",
        "02108",
        42.3577,
        -71.0637,
        "America/New_York",
    ),
];

const ELECTRONICS: &[(&str, &[&str])] = &[
    ("4K TV", &["TV & Home Theater", "TVs"]),
    ("Soundbar", &["TV & Home Theater", "Audio"]),
    ("Wireless Headphones", &["Audio", "Headphones"]),
    ("Laptop", &["Computers", "Laptops"]),
    ("Tablet", &["Computers", "Tablets"]),
    ("Smart Speaker", &["Audio", "Smart Home"]),
    ("Action Camera", &["Cameras", "Action Cameras"]),
    ("Gaming Console", &["Video Games", "Consoles"]),
];
const ELECTRONICS_BRANDS: &[&str] = &["Sonic", "Vizio", "Telly", "Aurora", "Kestrel", "Nimbus"];
const APPAREL: &[(&str, &[&str])] = &[
    ("Crew T-Shirt", &["Apparel", "Tops"]),
    ("Hoodie", &["Apparel", "Tops"]),
    ("Chino Pants", &["Apparel", "Bottoms"]),
    ("Rain Jacket", &["Apparel", "Outerwear"]),
    ("Wool Socks", &["Apparel", "Accessories"]),
];
const APPAREL_BRANDS: &[&str] = &["Threadline", "Northfold", "Lumen & Co", "Café Verde"];
const SIZES: &[&str] = &["S", "M", "L", "XL"];
const COLORS: &[&str] = &["Black", "Navy", "Olive", "Heather Grey"];

/// The GS1 check digit of the first digits of a code.
pub fn check_digit(body: &str) -> u32 {
    let sum: u32 = body
        .bytes()
        .rev()
        .enumerate()
        .map(|(i, b)| u32::from(b - b'0') * if i % 2 == 0 { 3 } else { 1 })
        .sum();
    (10 - sum % 10) % 10
}

fn upc(body11: u64) -> String {
    let body = format!("{body11:011}");
    let check = check_digit(&body);
    format!("{body}{check}")
}

impl World {
    /// The world of `seed`: the same seed, the same world.
    pub fn generate(seed: u64) -> Self {
        let mut rng = Rng::derive(seed, &[label("world")]);
        let mut products = Vec::with_capacity(PRODUCTS);
        let mut code = 1_000_000u64 + rng.below(1_000_000);
        for index in 0..PRODUCTS {
            let apparel = index % 4 == 3;
            let (department, noun, category, brand) = if apparel {
                let (noun, cat) = rng.pick(APPAREL);
                (Department::Apparel, *noun, *cat, *rng.pick(APPAREL_BRANDS))
            } else {
                let (noun, cat) = rng.pick(ELECTRONICS);
                (
                    Department::Electronics,
                    *noun,
                    *cat,
                    *rng.pick(ELECTRONICS_BRANDS),
                )
            };
            let model = 100 + rng.below(900);
            let title = format!("{brand} {noun} {model}");
            let base_weight = 200 + rng.below(8000) as u32;
            // About 2% of items carry no valid GTIN (a mistyped check digit).
            let invalid = rng.chance(0.02);
            let colors = 1 + rng.below(3) as usize;
            let mut next_code = |w: u32| {
                code += 1 + rng.below(7);
                let good = upc(40_000_000_000 + code);
                let variant_weight = w;
                if invalid {
                    let bad_check = (good.as_bytes()[11] - b'0' + 1) % 10;
                    let bad = format!("{}{bad_check}", &good[..11]);
                    (None, Some(bad), variant_weight)
                } else {
                    (Some(good), None, variant_weight)
                }
            };
            let variants: Vec<Variant> = if apparel {
                let mut out = Vec::new();
                for color in COLORS.iter().take(colors) {
                    for size in SIZES {
                        let (upc, bad_code, weight_g) = next_code(base_weight.min(900));
                        out.push(Variant {
                            options: vec![
                                ("Size".to_owned(), (*size).to_owned()),
                                ("Color".to_owned(), (*color).to_owned()),
                            ],
                            upc,
                            bad_code,
                            weight_g,
                        });
                    }
                }
                out
            } else {
                let (upc, bad_code, weight_g) = next_code(base_weight);
                vec![Variant {
                    options: Vec::new(),
                    upc,
                    bad_code,
                    weight_g,
                }]
            };
            // Sellers: the department's retailer, Acme for a good share, sometimes both
            // retailers' catalogs overlap through Acme only.
            let primary = if apparel {
                Partner::Threadline
            } else {
                Partner::Voltmart
            };
            let mut sellers = vec![primary];
            if rng.chance(0.45) {
                sellers.push(Partner::Acme);
            }
            if !apparel && rng.chance(0.1) {
                sellers.push(Partner::Threadline);
            }
            let base_price = 999 + rng.below(150_000) as i64;
            let listings = sellers
                .into_iter()
                .map(|partner| {
                    let native_id = match partner {
                        Partner::Voltmart => (6_000_000 + index).to_string(),
                        Partner::Threadline => (7_400_000_000 + index as u64).to_string(),
                        _ => format!("ACM-{:05}", index),
                    };
                    let list = base_price + rng.below(5) as i64 * 1000;
                    let price = if rng.chance(0.3) {
                        base_price - base_price / 10
                    } else {
                        base_price
                    };
                    Listing {
                        partner,
                        native_id,
                        price_cents: price,
                        list_price_cents: list.max(price),
                        updated_s: crate::shipping::SHIPPING_EPOCH_S
                            - rng.below(60 * 86_400) as i64,
                    }
                })
                .collect();
            products.push(Product {
                index,
                department,
                title,
                brand: brand.to_owned(),
                category: category.iter().map(|c| (*c).to_owned()).collect(),
                description: format!("The {brand} {noun} {model}, made for everyday use."),
                variants,
                listings,
            });
        }

        let mut locations = Vec::new();
        for (partner, kind, count) in [
            (Partner::Voltmart, LocationKind::Store, 10),
            (Partner::Threadline, LocationKind::Store, 6),
            (Partner::Threadline, LocationKind::Warehouse, 2),
            (Partner::Acme, LocationKind::Warehouse, 3),
            (Partner::Northwind, LocationKind::Warehouse, 3),
        ] {
            for i in 0..count {
                let (city, region, postal, lat, lon, tz) =
                    CITIES[(i * 3 + partner as usize) % CITIES.len()];
                let jitter = |r: &mut Rng| (r.below(2000) as f64 - 1000.0) / 20_000.0;
                let native_id = 100
                    + (partner as u32) * 100
                    + i as u32
                    + if kind == LocationKind::Warehouse {
                        50
                    } else {
                        0
                    };
                locations.push(Location {
                    partner,
                    native_id,
                    kind,
                    name: format!(
                        "{} {city} {}",
                        match partner {
                            Partner::Voltmart => "Voltmart",
                            Partner::Threadline => "Threadline",
                            Partner::Acme => "Acme",
                            _ => "Northwind",
                        },
                        if kind == LocationKind::Store {
                            "Store"
                        } else {
                            "Warehouse"
                        }
                    ),
                    street: format!("{} Market Street", 100 + rng.below(9000)),
                    city: city.to_owned(),
                    region: region.to_owned(),
                    postal_code: postal.to_owned(),
                    lat: lat + jitter(&mut rng),
                    lon: lon + jitter(&mut rng),
                    time_zone: tz.to_owned(),
                });
            }
        }
        Self {
            seed,
            products,
            locations,
            parcels: crate::shipping::generate(seed),
        }
    }

    /// Products a partner lists, in index order.
    pub fn listed_by(&self, partner: Partner) -> impl Iterator<Item = (&Product, &Listing)> {
        self.products
            .iter()
            .filter_map(move |p| p.listing(partner).map(|l| (p, l)))
    }

    /// The product a partner lists under `native_id`.
    pub fn by_native_id(&self, partner: Partner, native_id: &str) -> Option<(&Product, &Listing)> {
        self.listed_by(partner)
            .find(|(_, l)| l.native_id == native_id)
    }

    /// The parcel a carrier tracks under `number`.
    pub fn parcel(&self, carrier: Partner, number: &str) -> Option<&crate::shipping::Shipment> {
        self.parcels
            .iter()
            .find(|s| s.carrier == carrier && s.tracking_number == number)
    }

    pub fn locations_of(&self, partner: Partner) -> impl Iterator<Item = &Location> {
        self.locations.iter().filter(move |l| l.partner == partner)
    }

    /// A stream for one (location, product, variant) during the clock's current period.
    fn period_rng(
        &self,
        what: &str,
        location: &Location,
        product: usize,
        variant: usize,
        unix_s: i64,
    ) -> Rng {
        let period = unix_s.div_euclid(STOCK_PERIOD_S);
        Rng::derive(
            self.seed,
            &[
                label(what),
                u64::from(location.native_id),
                product as u64,
                variant as u64,
                period as u64,
            ],
        )
    }

    /// Units available of variant `variant` of product `product` at a location at
    /// `unix_s`: a deterministic function of the seed and the clock's 5-minute period.
    /// Can be negative (oversold), as Threadline reports it.
    pub fn stock(&self, location: &Location, product: usize, variant: usize, unix_s: i64) -> i64 {
        let mut r = self.period_rng("stock", location, product, variant, unix_s);
        match r.below(10) {
            0 => 0,
            1 => -(1 + r.below(3) as i64),
            2 | 3 => 1 + r.below(3) as i64,
            _ => 4 + r.below(40) as i64,
        }
    }

    /// Units on order for a location (never available).
    pub fn incoming(
        &self,
        location: &Location,
        product: usize,
        variant: usize,
        unix_s: i64,
    ) -> i64 {
        let mut r = self.period_rng("incoming", location, product, variant, unix_s);
        if r.chance(0.3) {
            5 + r.below(50) as i64
        } else {
            0
        }
    }
}

/// Great-circle distance in kilometres.
pub fn distance_km(lat1: f64, lon1: f64, lat2: f64, lon2: f64) -> f64 {
    let (p1, p2) = (lat1.to_radians(), lat2.to_radians());
    let dp = (lat2 - lat1).to_radians();
    let dl = (lon2 - lon1).to_radians();
    let a = (dp / 2.0).sin().powi(2) + p1.cos() * p2.cos() * (dl / 2.0).sin().powi(2);
    6371.0 * 2.0 * a.sqrt().asin()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_gives_the_same_world() {
        let (a, b) = (World::generate(7), World::generate(7));
        assert_eq!(a.products, b.products);
        assert_ne!(World::generate(8).products, a.products);
    }

    #[test]
    fn codes_are_valid_except_the_few_that_are_not() {
        let w = World::generate(7);
        let variants: Vec<&Variant> = w.products.iter().flat_map(|p| &p.variants).collect();
        let valid = variants.iter().filter(|v| v.upc.is_some()).count();
        assert!(
            valid < variants.len() && valid * 100 > variants.len() * 95,
            "{valid}/{}",
            variants.len()
        );
        for v in &variants {
            if let Some(g) = v.gtin14() {
                assert!(mallgate_schemas::gtin14_is_valid(&g), "{g}");
            }
            if let Some(bad) = &v.bad_code {
                assert!(
                    !mallgate_schemas::gtin14_is_valid(&format!("00{bad}")),
                    "{bad}"
                );
            }
        }
        let mut all: Vec<String> = variants.iter().filter_map(|v| v.gtin14()).collect();
        let n = all.len();
        all.sort();
        all.dedup();
        assert_eq!(all.len(), n, "codes are unique");
    }

    #[test]
    fn many_products_are_sold_by_several_partners() {
        let w = World::generate(7);
        let multi = w.products.iter().filter(|p| p.listings.len() >= 2).count();
        let three = w.products.iter().filter(|p| p.listings.len() == 3).count();
        assert!(multi * 4 > w.products.len(), "{multi}");
        assert!(three > 0);
        assert!(
            w.products.iter().any(|p| p.variants.len() >= 4),
            "apparel variants"
        );
    }

    #[test]
    fn stock_is_a_function_of_the_clock() {
        let w = World::generate(7);
        let loc = &w.locations[0];
        let a = w.stock(loc, 5, 0, 1_795_000_000);
        assert_eq!(a, w.stock(loc, 5, 0, 1_795_000_000 + 10));
        let changes = (0..50)
            .filter(|i| w.stock(loc, 5, 0, i * STOCK_PERIOD_S) != a)
            .count();
        assert!(changes > 0);
    }
}
