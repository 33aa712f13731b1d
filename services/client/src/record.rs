//! The records a producer sends and a consumer receives.

use dmq_proto::v1 as pb;

/// A record header: a string key and opaque bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    pub key: String,
    pub value: Vec<u8>,
}

/// A record to produce.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Record {
    /// Decides the partition under the key-hash partitioner. An empty key counts as none
    /// (the wire cannot tell them apart).
    pub key: Option<Vec<u8>>,
    pub value: Vec<u8>,
    pub headers: Vec<Header>,
    /// Milliseconds since the Unix epoch; `None`: the leader's clock when it appends.
    pub timestamp_ms: Option<i64>,
}

impl Record {
    /// A record holding `value`, without key, headers or timestamp.
    pub fn new(value: impl Into<Vec<u8>>) -> Record {
        Record {
            value: value.into(),
            ..Record::default()
        }
    }

    /// With `key`.
    pub fn with_key(mut self, key: impl Into<Vec<u8>>) -> Record {
        self.key = Some(key.into());
        self
    }

    /// With one more header.
    pub fn with_header(mut self, key: impl Into<String>, value: impl Into<Vec<u8>>) -> Record {
        self.headers.push(Header {
            key: key.into(),
            value: value.into(),
        });
        self
    }

    /// With an explicit timestamp.
    pub fn with_timestamp_ms(mut self, timestamp_ms: i64) -> Record {
        self.timestamp_ms = Some(timestamp_ms);
        self
    }

    /// The key, if it has a non-empty one.
    pub fn key_bytes(&self) -> Option<&[u8]> {
        self.key.as_deref().filter(|k| !k.is_empty())
    }

    pub(crate) fn into_wire(self) -> pb::Record {
        pb::Record {
            key: self.key.unwrap_or_default(),
            value: self.value,
            headers: self
                .headers
                .into_iter()
                .map(|h| pb::Header {
                    key: h.key,
                    value: h.value,
                })
                .collect(),
            timestamp_ms: self.timestamp_ms.unwrap_or(0),
        }
    }
}

/// Where a produced record landed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordMetadata {
    pub partition: u32,
    /// The record's offset; `None` with [`Acks::None`](crate::Acks::None), whose answer comes
    /// before anything is written.
    pub offset: Option<u64>,
}

/// A record read from a partition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConsumedRecord {
    pub topic: String,
    pub partition: u32,
    pub offset: u64,
    /// Milliseconds since the Unix epoch (the producer's, or the leader's clock at append).
    pub timestamp_ms: i64,
    /// `None` when the record has no (or an empty) key.
    pub key: Option<Vec<u8>>,
    pub value: Vec<u8>,
    pub headers: Vec<Header>,
}

impl ConsumedRecord {
    pub(crate) fn from_wire(topic: &str, partition: u32, r: pb::FetchedRecord) -> ConsumedRecord {
        ConsumedRecord {
            topic: topic.to_string(),
            partition,
            offset: r.offset,
            timestamp_ms: r.timestamp_ms,
            key: (!r.key.is_empty()).then_some(r.key),
            value: r.value,
            headers: r
                .headers
                .into_iter()
                .map(|h| Header {
                    key: h.key,
                    value: h.value,
                })
                .collect(),
        }
    }
}
