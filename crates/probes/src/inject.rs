//! Injected thermal anomalies: one `system_metrics` row at or above the critical temperature,
//! posted through the Data API as the device's owner, identified afterwards by (device, timestamp).

use chrono::{DateTime, SubsecRound, Utc};
use serde_json::{Value, json};
use uuid::Uuid;

use fleetbench_fleet::TargetConfig;

use crate::users::User;

/// What identifies an injected row and the alert it raises: the device and the sample's time (µs).
pub type Key = (Uuid, i64);

/// The temperature injected: well above the default critical threshold (95 °C).
pub const HOT_C: f64 = 99.5;

/// A row that must raise a critical thermal alert.
pub fn thermal_row(user: &User, ts: DateTime<Utc>) -> Value {
    json!([{
        "device_id": user.device, "user_id": user.id, "ts": ts.to_rfc3339(),
        "cpu_pct": 97.0, "cpu_temp_c": HOT_C,
        "mem_used_bytes": 8_000_000_000i64, "mem_total_bytes": 16_000_000_000i64,
    }])
}

/// Inserts a hot row for `user` now through the Data API; returns its key, or the failure as text.
pub async fn thermal(
    http: &reqwest::Client,
    target: &TargetConfig,
    user: &User,
) -> Result<Key, String> {
    let ts = Utc::now().trunc_subsecs(6);
    let res = http
        .post(format!("{}/rest/v1/system_metrics", target.api_url))
        .header("apikey", &target.anon_key)
        .bearer_auth(user.token())
        .header("Prefer", "return=minimal")
        .json(&thermal_row(user, ts))
        .send()
        .await
        .map_err(|e| format!("transport: {e}"))?;
    let status = res.status().as_u16();
    if status != 201 {
        let body = res.text().await.unwrap_or_default();
        return Err(format!(
            "HTTP {status}: {}",
            body.chars().take(200).collect::<String>()
        ));
    }
    Ok((user.device, ts.timestamp_micros()))
}

/// A timestamp as Postgres, PostgREST or Realtime write it, as Unix µs.
pub fn parse_ts(s: &str) -> Option<i64> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some(t.timestamp_micros());
    }
    for f in ["%Y-%m-%d %H:%M:%S%.f%#z", "%Y-%m-%dT%H:%M:%S%.f%#z"] {
        if let Ok(t) = DateTime::parse_from_str(s, f) {
            return Some(t.timestamp_micros());
        }
    }
    for f in ["%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S%.f"] {
        if let Ok(t) = chrono::NaiveDateTime::parse_from_str(s, f) {
            return Some(t.and_utc().timestamp_micros());
        }
    }
    None
}

/// The key of an alert (or metrics) record: its device and its `metric_ts` (or `ts`).
pub fn key_of(record: &Value) -> Option<Key> {
    let device = record["device_id"].as_str()?.parse().ok()?;
    let ts = record["metric_ts"]
        .as_str()
        .or_else(|| record["ts"].as_str())
        .and_then(parse_ts)?;
    Some((device, ts))
}

#[cfg(test)]
mod tests {
    #[test]
    fn timestamps_parse_in_every_wire_form() {
        let want = super::parse_ts("2026-11-26T10:00:00.123456Z").unwrap();
        for s in [
            "2026-11-26T10:00:00.123456+00:00",
            "2026-11-26 10:00:00.123456+00",
            "2026-11-26 11:00:00.123456+01",
            "2026-11-26T10:00:00.123456",
        ] {
            assert_eq!(super::parse_ts(s), Some(want), "{s}");
        }
    }
}
