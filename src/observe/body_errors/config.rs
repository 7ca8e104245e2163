//! `sources[].body_errors` as written: the name of a built-in pack, or `{ rules: [...] }` of the
//! user's own. The config's schema takes these types from here, beside [`super::Rules`], which
//! checks what the names and pointers mean as it compiles them (config validation calls it), so
//! that the readers of a response import nothing of the config.

use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, Visitor};

/// `sources[].body_errors`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BodyErrorsConfig {
    /// A built-in pack: `tiktok`, `graphql`, ...
    Pack(String),
    /// `{ rules: [...] }`.
    Rules(Vec<RuleConfig>),
}

/// One rule of the user's: where the value is and what it means.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    /// A JSON pointer, `*` standing for every element of an array: `/errors/*/code`.
    pub pointer: String,
    /// `{ value: status, ... }`, or `http_status` when the value is itself an HTTP status.
    pub errors: RuleErrors,
    /// Values that mean success.
    #[serde(default, deserialize_with = "scalars")]
    pub ok: Vec<String>,
    /// The HTTP status any other value stands for (`api_code="other"`); without it, a value
    /// neither listed nor `ok` is not an error.
    #[serde(default)]
    pub other: Option<u16>,
}

/// `rules[].errors`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RuleErrors {
    /// The value is an HTTP status: 400 to 599 is an error standing for itself; any other
    /// number is none, so that a vendor's odd value cannot add series.
    HttpStatus,
    /// Each value that means an error, with the HTTP status it stands for.
    Table(Vec<(String, u16)>),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OwnRules {
    rules: Vec<RuleConfig>,
}

impl<'de> Deserialize<'de> for BodyErrorsConfig {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = BodyErrorsConfig;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("the name of a built-in pack, or { rules: [...] }")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(BodyErrorsConfig::Pack(v.to_owned()))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                let own = OwnRules::deserialize(de::value::MapAccessDeserializer::new(map))?;
                Ok(BodyErrorsConfig::Rules(own.rules))
            }
        }
        d.deserialize_any(V)
    }
}

impl<'de> Deserialize<'de> for RuleErrors {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RuleErrors;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a map of value: HTTP status, or http_status")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                if v == "http_status" {
                    Ok(RuleErrors::HttpStatus)
                } else {
                    Err(E::invalid_value(de::Unexpected::Str(v), &self))
                }
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut table = Vec::new();
                while let Some((Scalar(value), status)) = map.next_entry::<Scalar, u16>()? {
                    table.push((value, status));
                }
                Ok(RuleErrors::Table(table))
            }
        }
        d.deserialize_any(V)
    }
}

/// A scalar as the text it is compared by: `40100` and `"40100"` are the same value.
struct Scalar(String);

impl<'de> Deserialize<'de> for Scalar {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Scalar;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a number, a string or a boolean")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Scalar, E> {
                Ok(Scalar(v.to_owned()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
        }
        d.deserialize_any(V)
    }
}

fn scalars<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    Ok(Vec::<Scalar>::deserialize(d)?
        .into_iter()
        .map(|s| s.0)
        .collect())
}

/// `sources[].body_errors_max_bytes`: 64 KiB.
pub fn default_max_bytes() -> usize {
    64 * 1024
}
