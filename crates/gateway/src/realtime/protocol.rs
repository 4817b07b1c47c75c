//! Phoenix channel frames in the two serializers Realtime speaks: `vsn=1.0.0` JSON objects
//! (`{"topic","event","payload","ref","join_ref"}`) and `vsn=2.0.0` JSON arrays
//! (`[join_ref, ref, topic, event, payload]`), plus the 2.0.0 binary "user broadcast push" (kind 3)
//! that realtime-js sends for `channel.send({type: "broadcast"})`. The server always answers in text.

use serde_json::{Value, json};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Vsn {
    V1,
    V2,
}

impl Vsn {
    /// `?vsn=`; absent means 1.0.0, as on the hosted endpoint.
    pub fn parse(v: Option<&str>) -> Result<Vsn, String> {
        match v {
            None | Some("1.0.0") => Ok(Vsn::V1),
            Some("2.0.0") => Ok(Vsn::V2),
            Some(other) => Err(format!(
                "unsupported serializer vsn={other}: this endpoint speaks 1.0.0 and 2.0.0"
            )),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Frame {
    pub join_ref: Option<String>,
    pub msg_ref: Option<String>,
    pub topic: String,
    pub event: String,
    pub payload: Value,
}

/// Clients send refs as strings (realtime-js, realtime-py) but numbers are valid JSON there too.
fn opt_ref(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    }
}

impl Frame {
    pub fn new(topic: &str, event: &str, payload: Value) -> Frame {
        Frame {
            join_ref: None,
            msg_ref: None,
            topic: topic.to_string(),
            event: event.to_string(),
            payload,
        }
    }

    /// The `phx_reply` to `to`.
    pub fn reply(to: &Frame, status: &str, response: Value) -> Frame {
        Frame {
            join_ref: to.join_ref.clone(),
            msg_ref: to.msg_ref.clone(),
            topic: to.topic.clone(),
            event: "phx_reply".into(),
            payload: json!({ "status": status, "response": response }),
        }
    }

    pub fn decode_text(text: &str, vsn: Vsn) -> Result<Frame, String> {
        let value: Value =
            serde_json::from_str(text).map_err(|e| format!("frame is not JSON: {e}"))?;
        match (vsn, value) {
            (Vsn::V1, Value::Object(o)) => Ok(Frame {
                join_ref: opt_ref(o.get("join_ref")),
                msg_ref: opt_ref(o.get("ref")),
                topic: str_field(o.get("topic"), "topic")?,
                event: str_field(o.get("event"), "event")?,
                payload: o.get("payload").cloned().unwrap_or(Value::Null),
            }),
            (Vsn::V2, Value::Array(a)) if a.len() == 5 => Ok(Frame {
                join_ref: opt_ref(a.first()),
                msg_ref: opt_ref(a.get(1)),
                topic: str_field(a.get(2), "topic")?,
                event: str_field(a.get(3), "event")?,
                payload: a[4].clone(),
            }),
            (Vsn::V1, _) => Err("vsn 1.0.0 frames are JSON objects".into()),
            (Vsn::V2, _) => {
                Err("vsn 2.0.0 frames are arrays [join_ref, ref, topic, event, payload]".into())
            }
        }
    }

    /// A 2.0.0 binary frame: only the user broadcast push (kind 3) is a client message.
    pub fn decode_binary(b: &[u8]) -> Result<Frame, String> {
        const HEADER: usize = 7;
        if b.len() < HEADER || b[0] != 3 {
            return Err("binary frames from clients are user broadcast pushes (kind 3)".into());
        }
        let lens = [b[1], b[2], b[3], b[4], b[5]].map(usize::from);
        let json_encoded = b[6] == 1;
        let mut at = HEADER;
        let mut parts = Vec::with_capacity(5);
        for len in lens {
            let part = b
                .get(at..at + len)
                .ok_or("binary broadcast push ends early")?;
            parts.push(String::from_utf8_lossy(part).into_owned());
            at += len;
        }
        let body = &b[at..];
        let user_payload = if json_encoded {
            serde_json::from_slice(body).map_err(|e| format!("broadcast payload: {e}"))?
        } else {
            // Binary payloads are relayed as a JSON array of bytes to text-only receivers.
            Value::Array(body.iter().map(|&x| Value::from(x)).collect())
        };
        let mut payload =
            json!({ "type": "broadcast", "event": parts[3], "payload": user_payload });
        if !parts[4].is_empty()
            && let Ok(Value::Object(meta)) = serde_json::from_str::<Value>(&parts[4])
        {
            for (k, v) in meta {
                payload[k] = v;
            }
        }
        let nonempty = |s: &String| (!s.is_empty()).then(|| s.clone());
        Ok(Frame {
            join_ref: nonempty(&parts[0]),
            msg_ref: nonempty(&parts[1]),
            topic: parts[2].clone(),
            event: "broadcast".into(),
            payload,
        })
    }

    pub fn encode(&self, vsn: Vsn) -> String {
        match vsn {
            Vsn::V1 => json!({
                "topic": self.topic,
                "event": self.event,
                "payload": self.payload,
                "ref": self.msg_ref,
                "join_ref": self.join_ref,
            })
            .to_string(),
            Vsn::V2 => json!([
                self.join_ref,
                self.msg_ref,
                self.topic,
                self.event,
                self.payload
            ])
            .to_string(),
        }
    }
}

/// A `postgres_changes` frame around `data`, already serialised once for every recipient.
pub fn encode_change(
    vsn: Vsn,
    join_ref: Option<&str>,
    topic: &str,
    ids: &[u32],
    data: &str,
) -> String {
    let ids = serde_json::to_string(ids).expect("ids serialise");
    let topic = serde_json::to_string(topic).expect("topic serialises");
    let join_ref = serde_json::to_string(&join_ref).expect("join_ref serialises");
    match vsn {
        Vsn::V1 => format!(
            r#"{{"topic":{topic},"event":"postgres_changes","payload":{{"ids":{ids},"data":{data}}},"ref":null,"join_ref":{join_ref}}}"#
        ),
        Vsn::V2 => {
            format!(r#"[{join_ref},null,{topic},"postgres_changes",{{"ids":{ids},"data":{data}}}]"#)
        }
    }
}

fn str_field(v: Option<&Value>, name: &str) -> Result<String, String> {
    v.and_then(Value::as_str)
        .map(str::to_string)
        .ok_or_else(|| format!("`{name}` must be a string"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_serializers_round_trip() {
        let f = Frame {
            join_ref: Some("1".into()),
            msg_ref: Some("2".into()),
            topic: "realtime:a".into(),
            event: "phx_join".into(),
            payload: json!({ "config": {} }),
        };
        for vsn in [Vsn::V1, Vsn::V2] {
            assert_eq!(Frame::decode_text(&f.encode(vsn), vsn).unwrap(), f);
        }
        assert!(Frame::decode_text(&f.encode(Vsn::V1), Vsn::V2).is_err());
    }

    #[test]
    fn change_frames_are_valid_json() {
        for vsn in [Vsn::V1, Vsn::V2] {
            let text = encode_change(
                vsn,
                Some("3"),
                "realtime:x",
                &[7, 9],
                r#"{"type":"INSERT"}"#,
            );
            let f = Frame::decode_text(&text, vsn).unwrap();
            assert_eq!(f.event, "postgres_changes");
            assert_eq!(f.payload["ids"], json!([7, 9]));
            assert_eq!(f.payload["data"]["type"], "INSERT");
        }
    }

    #[test]
    fn binary_broadcast_push_decodes() {
        let (join_ref, r, topic, event) = ("1", "5", "realtime:room", "cursor");
        let body = br#"{"x":1}"#;
        let mut b = vec![
            3,
            join_ref.len() as u8,
            r.len() as u8,
            topic.len() as u8,
            event.len() as u8,
            0,
            1,
        ];
        for s in [join_ref, r, topic, event] {
            b.extend(s.as_bytes());
        }
        b.extend(body);
        let f = Frame::decode_binary(&b).unwrap();
        assert_eq!(f.topic, "realtime:room");
        assert_eq!(f.msg_ref.as_deref(), Some("5"));
        assert_eq!(
            f.payload,
            json!({ "type": "broadcast", "event": "cursor", "payload": { "x": 1 } })
        );
    }
}
