//! Checksummed values: every value the controller stores in sled carries a CRC32 (crc32fast) over
//! its key and its payload, so that a flipped bit, a torn value or a value found under the wrong
//! key is detected when it is read back instead of being used.
//!
//! Layout of a sealed value: `crc32(key || payload)` as a big-endian u32, then the payload.

/// Bytes the checksum takes in front of every sealed value.
pub const CHECKSUM_LEN_BYTES: usize = 4;

/// The CRC32 of `key` followed by `payload`.
pub fn checksum(key: &[u8], payload: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(key);
    hasher.update(payload);
    hasher.finalize()
}

/// Builds the value to store under `key`: `write` appends the payload, the checksum is put in front.
pub fn seal(
    key: &[u8],
    payload_capacity_bytes: usize,
    write: impl FnOnce(&mut Vec<u8>),
) -> Vec<u8> {
    let mut value = Vec::with_capacity(CHECKSUM_LEN_BYTES + payload_capacity_bytes);
    value.extend_from_slice(&[0; CHECKSUM_LEN_BYTES]);
    write(&mut value);
    let crc = checksum(key, &value[CHECKSUM_LEN_BYTES..]);
    value[..CHECKSUM_LEN_BYTES].copy_from_slice(&crc.to_be_bytes());
    value
}

/// The payload of a value read under `key`, or why it cannot be trusted.
pub fn unseal<'a>(key: &[u8], value: &'a [u8]) -> Result<&'a [u8], String> {
    let Some((crc, payload)) = value.split_first_chunk::<CHECKSUM_LEN_BYTES>() else {
        return Err(format!(
            "the value is {} bytes, shorter than its {CHECKSUM_LEN_BYTES}-byte checksum",
            value.len()
        ));
    };
    let stored = u32::from_be_bytes(*crc);
    let computed = checksum(key, payload);
    if stored != computed {
        return Err(format!(
            "checksum mismatch (stored {stored:#010x}, computed {computed:#010x})"
        ));
    }
    Ok(payload)
}

/// Reads big-endian fields off a payload; every read reports a truncated payload as an error.
pub struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    pub fn new(payload: &'a [u8]) -> Reader<'a> {
        Reader { rest: payload }
    }

    pub fn u8(&mut self) -> Result<u8, String> {
        Ok(self.array::<1>()?[0])
    }

    pub fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    pub fn u64(&mut self) -> Result<u64, String> {
        Ok(u64::from_be_bytes(self.array()?))
    }

    /// Whatever is left.
    pub fn rest(self) -> &'a [u8] {
        self.rest
    }

    /// Fails unless everything was read.
    pub fn finish(self) -> Result<(), String> {
        if self.rest.is_empty() {
            Ok(())
        } else {
            Err(format!("{} unexpected trailing bytes", self.rest.len()))
        }
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], String> {
        let Some((head, rest)) = self.rest.split_first_chunk::<N>() else {
            return Err(format!(
                "the payload is truncated ({} bytes left, {N} needed)",
                self.rest.len()
            ));
        };
        self.rest = rest;
        Ok(*head)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_value_unseals_only_under_its_key_and_intact() {
        let value = seal(b"k", 3, |v| v.extend_from_slice(b"abc"));
        assert_eq!(unseal(b"k", &value), Ok(&b"abc"[..]));
        assert!(unseal(b"j", &value).is_err());
        let mut flipped = value.clone();
        flipped[5] ^= 0x01;
        assert!(unseal(b"k", &flipped).is_err());
        assert!(unseal(b"k", &value[..3]).is_err());
    }

    #[test]
    fn the_reader_reports_truncation() {
        let mut r = Reader::new(&[0, 0, 0, 7, 1]);
        assert_eq!(r.u32(), Ok(7));
        assert!(r.u64().is_err());
    }
}
