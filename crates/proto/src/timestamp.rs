//! `google.protobuf.Timestamp`, with the proto3 JSON mapping's own form. pbjson-types'
//! Timestamp writes `+00:00` where the mapping writes `Z` (its output "will always be
//! Z-normalized"); every other well-known type is pbjson-types'.

use chrono::{DateTime, SecondsFormat};

/// A point in time: seconds and nanoseconds since the Unix epoch, UTC.
#[derive(Clone, Copy, PartialEq, Eq, Hash, prost::Message)]
pub struct Timestamp {
    /// Seconds since 1970-01-01T00:00:00Z.
    #[prost(int64, tag = "1")]
    pub seconds: i64,
    /// Nanoseconds within the second, 0 to 999,999,999.
    #[prost(int32, tag = "2")]
    pub nanos: i32,
}

impl serde::Serialize for Timestamp {
    /// RFC 3339 in UTC with `Z`, and 0, 3, 6 or 9 fractional digits.
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let at = u32::try_from(self.nanos)
            .ok()
            .and_then(|nanos| DateTime::from_timestamp(self.seconds, nanos))
            .ok_or_else(|| serde::ser::Error::custom("timestamp out of range"))?;
        serializer.serialize_str(&at.to_rfc3339_opts(SecondsFormat::AutoSi, true))
    }
}

impl<'de> serde::Deserialize<'de> for Timestamp {
    /// Any RFC 3339 time (an offset is converted to UTC).
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        let at = DateTime::parse_from_rfc3339(&text).map_err(serde::de::Error::custom)?;
        Ok(Self {
            seconds: at.timestamp(),
            nanos: i32::try_from(at.timestamp_subsec_nanos()).unwrap_or(0),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_is_utc_with_z_and_reads_back() {
        for (seconds, nanos, text) in [
            (0, 0, "1970-01-01T00:00:00Z"),
            (1_795_345_385, 123_456_000, "2026-11-22T11:03:05.123456Z"),
            (1_795_345_385, 1, "2026-11-22T11:03:05.000000001Z"),
            (-1, 999_000_000, "1969-12-31T23:59:59.999Z"),
        ] {
            let at = Timestamp { seconds, nanos };
            let json = serde_json::to_string(&at).expect("serialize");
            assert_eq!(json, format!("\"{text}\""));
            assert_eq!(serde_json::from_str::<Timestamp>(&json).ok(), Some(at));
        }
        let offset: Timestamp =
            serde_json::from_str("\"2026-11-22T12:03:05+01:00\"").expect("an offset");
        assert_eq!(offset.seconds, 1_795_345_385);
        assert!(
            serde_json::to_string(&Timestamp {
                seconds: 0,
                nanos: -1
            })
            .is_err()
        );
        assert!(serde_json::from_str::<Timestamp>("\"yesterday\"").is_err());
    }
}
