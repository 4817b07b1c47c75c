//! Decoding of `pgoutput` logical-decoding messages (protocol version 1), as
//! `pg_logical_slot_peek_binary_changes(…, 'proto_version', '1', 'publication_names', …)` returns
//! them: one message per row. Hosted Realtime reads its slot through wal2json; the embedded
//! PostgreSQL ships only the built-in `pgoutput` plugin, so the stand-in decodes that instead.
//!
//! Written by hand: the published Rust decoders either drive the streaming replication protocol over
//! libpq or are unmaintained forks, and the part needed here (Begin, Relation, Insert, Update,
//! Delete, Truncate, Commit, with text-format tuples) is a small, fixed byte layout documented in
//! PostgreSQL's "Logical Replication Message Formats".

/// Microseconds between the Unix epoch and PostgreSQL's (2000-01-01).
const PG_EPOCH_OFFSET_US: i64 = 946_684_800_000_000;

#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    Begin {
        final_lsn: u64,
        /// Commit time, microseconds since the Unix epoch.
        commit_time_us: i64,
    },
    Commit {
        end_lsn: u64,
        commit_time_us: i64,
    },
    Relation(Relation),
    Insert {
        relation: u32,
        new: Vec<Datum>,
    },
    Update {
        relation: u32,
        /// The old key (`K`) or whole old row (`O`, replica identity full), when sent.
        old: Option<Vec<Datum>>,
        new: Vec<Datum>,
    },
    Delete {
        relation: u32,
        old: Vec<Datum>,
    },
    Truncate {
        relations: Vec<u32>,
    },
    /// Origin, Type and logical messages: nothing Realtime delivers.
    Other(u8),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Relation {
    pub oid: u32,
    pub schema: String,
    pub name: String,
    /// `d` default, `n` nothing, `f` full, `i` index.
    pub replica_identity: u8,
    pub columns: Vec<RelationColumn>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RelationColumn {
    /// Part of the replica identity key.
    pub key: bool,
    pub name: String,
    pub type_oid: u32,
}

/// One column of a tuple in text format.
#[derive(Debug, Clone, PartialEq)]
pub enum Datum {
    Null,
    /// An unchanged TOASTed value the update did not carry.
    Unchanged,
    Text(String),
}

#[derive(Debug, thiserror::Error, PartialEq)]
#[error("pgoutput message {tag:?}: {what} at byte {at}")]
pub struct DecodeError {
    pub tag: char,
    pub what: &'static str,
    pub at: usize,
}

/// Decodes one message.
pub fn decode(bytes: &[u8]) -> Result<Message, DecodeError> {
    let Some(&tag) = bytes.first() else {
        return Err(DecodeError {
            tag: '?',
            what: "empty message",
            at: 0,
        });
    };
    let mut r = Reader {
        bytes,
        at: 1,
        tag: tag as char,
    };
    let message = match tag {
        b'B' => {
            let final_lsn = r.u64()?;
            let ts = r.i64()?;
            let _xid = r.u32()?;
            Message::Begin {
                final_lsn,
                commit_time_us: ts + PG_EPOCH_OFFSET_US,
            }
        }
        b'C' => {
            let _flags = r.u8()?;
            let _commit_lsn = r.u64()?;
            let end_lsn = r.u64()?;
            let ts = r.i64()?;
            Message::Commit {
                end_lsn,
                commit_time_us: ts + PG_EPOCH_OFFSET_US,
            }
        }
        b'R' => {
            let oid = r.u32()?;
            let schema = r.cstr()?;
            let name = r.cstr()?;
            let replica_identity = r.u8()?;
            let n = r.u16()?;
            let mut columns = Vec::with_capacity(n as usize);
            for _ in 0..n {
                let flags = r.u8()?;
                let name = r.cstr()?;
                let type_oid = r.u32()?;
                let _typmod = r.u32()?;
                columns.push(RelationColumn {
                    key: flags & 1 == 1,
                    name,
                    type_oid,
                });
            }
            Message::Relation(Relation {
                oid,
                schema,
                name,
                replica_identity,
                columns,
            })
        }
        b'I' => {
            let relation = r.u32()?;
            r.expect(b'N')?;
            Message::Insert {
                relation,
                new: r.tuple()?,
            }
        }
        b'U' => {
            let relation = r.u32()?;
            let mut old = None;
            let mut kind = r.u8()?;
            if kind == b'K' || kind == b'O' {
                old = Some(r.tuple()?);
                kind = r.u8()?;
            }
            if kind != b'N' {
                return Err(r.error("expected a new tuple (N)"));
            }
            Message::Update {
                relation,
                old,
                new: r.tuple()?,
            }
        }
        b'D' => {
            let relation = r.u32()?;
            let kind = r.u8()?;
            if kind != b'K' && kind != b'O' {
                return Err(r.error("expected an old key (K) or old row (O)"));
            }
            Message::Delete {
                relation,
                old: r.tuple()?,
            }
        }
        b'T' => {
            let n = r.u32()?;
            let _options = r.u8()?;
            let relations = (0..n).map(|_| r.u32()).collect::<Result<_, _>>()?;
            Message::Truncate { relations }
        }
        other => Message::Other(other),
    };
    Ok(message)
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
    tag: char,
}

impl Reader<'_> {
    fn error(&self, what: &'static str) -> DecodeError {
        DecodeError {
            tag: self.tag,
            what,
            at: self.at,
        }
    }

    fn take(&mut self, n: usize) -> Result<&[u8], DecodeError> {
        let end = self.at + n;
        if end > self.bytes.len() {
            return Err(self.error("message ends early"));
        }
        let s = &self.bytes[self.at..end];
        self.at = end;
        Ok(s)
    }

    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, DecodeError> {
        Ok(u16::from_be_bytes(self.take(2)?.try_into().unwrap()))
    }

    fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_be_bytes(self.take(4)?.try_into().unwrap()))
    }

    fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_be_bytes(self.take(8)?.try_into().unwrap()))
    }

    fn i64(&mut self) -> Result<i64, DecodeError> {
        Ok(i64::from_be_bytes(self.take(8)?.try_into().unwrap()))
    }

    fn expect(&mut self, want: u8) -> Result<(), DecodeError> {
        if self.u8()? == want {
            Ok(())
        } else {
            Err(self.error("unexpected tuple kind"))
        }
    }

    fn cstr(&mut self) -> Result<String, DecodeError> {
        let rest = &self.bytes[self.at..];
        let Some(len) = rest.iter().position(|&b| b == 0) else {
            return Err(self.error("unterminated string"));
        };
        let s = String::from_utf8(rest[..len].to_vec()).map_err(|_| self.error("not UTF-8"))?;
        self.at += len + 1;
        Ok(s)
    }

    fn tuple(&mut self) -> Result<Vec<Datum>, DecodeError> {
        let n = self.u16()?;
        let mut out = Vec::with_capacity(n as usize);
        for _ in 0..n {
            out.push(match self.u8()? {
                b'n' => Datum::Null,
                b'u' => Datum::Unchanged,
                b't' => {
                    let len = self.u32()? as usize;
                    let bad = self.error("value is not UTF-8");
                    let text = std::str::from_utf8(self.take(len)?).map_err(|_| bad)?;
                    Datum::Text(text.to_string())
                }
                _ => return Err(self.error("unknown column kind (binary mode is not requested)")),
            });
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tuple(values: &[Option<&str>]) -> Vec<u8> {
        let mut out = (values.len() as u16).to_be_bytes().to_vec();
        for v in values {
            match v {
                None => out.push(b'n'),
                Some(t) => {
                    out.push(b't');
                    out.extend((t.len() as u32).to_be_bytes());
                    out.extend(t.as_bytes());
                }
            }
        }
        out
    }

    #[test]
    fn decodes_relation_insert_and_commit() {
        let mut rel = vec![b'R'];
        rel.extend(16384u32.to_be_bytes());
        rel.extend(b"public\0alerts\0");
        rel.push(b'd');
        rel.extend(2u16.to_be_bytes());
        rel.push(1);
        rel.extend(b"id\0");
        rel.extend(20u32.to_be_bytes());
        rel.extend((-1i32).to_be_bytes());
        rel.push(0);
        rel.extend(b"message\0");
        rel.extend(25u32.to_be_bytes());
        rel.extend((-1i32).to_be_bytes());
        let Message::Relation(r) = decode(&rel).unwrap() else {
            panic!("not a relation")
        };
        assert_eq!((r.schema.as_str(), r.name.as_str()), ("public", "alerts"));
        assert!(r.columns[0].key && !r.columns[1].key);
        assert_eq!(r.columns[1].type_oid, 25);

        let mut ins = vec![b'I'];
        ins.extend(16384u32.to_be_bytes());
        ins.push(b'N');
        ins.extend(tuple(&[Some("7"), None]));
        assert_eq!(
            decode(&ins).unwrap(),
            Message::Insert {
                relation: 16384,
                new: vec![Datum::Text("7".into()), Datum::Null]
            }
        );

        let mut commit = vec![b'C', 0];
        commit.extend(10u64.to_be_bytes());
        commit.extend(42u64.to_be_bytes());
        commit.extend(1_000_000i64.to_be_bytes());
        assert_eq!(
            decode(&commit).unwrap(),
            Message::Commit {
                end_lsn: 42,
                commit_time_us: 1_000_000 + PG_EPOCH_OFFSET_US
            }
        );
    }

    #[test]
    fn truncated_messages_are_errors_with_a_position() {
        let mut ins = vec![b'I'];
        ins.extend(16384u32.to_be_bytes());
        ins.push(b'N');
        ins.extend(tuple(&[Some("hello")]));
        ins.truncate(ins.len() - 2);
        let e = decode(&ins).unwrap_err();
        assert_eq!((e.tag, e.what), ('I', "message ends early"));
    }
}
