//! Unsigned LEB128 varints (7 bits a byte, low bits first, high bit = "more follows") and
//! zigzag for signed values, as used inside a record batch (see [`crate`]).

/// The most bytes a u64 varint takes.
pub const MAX_VARINT_LEN: usize = 10;

/// Appends `value` as a varint.
pub fn put_u64(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// Appends `value` zigzag-encoded (small magnitudes of either sign stay short).
pub fn put_i64(out: &mut Vec<u8>, value: i64) {
    put_u64(out, zigzag(value));
}

/// How many bytes `value` takes as a varint.
pub fn len_u64(value: u64) -> usize {
    // 1 byte per started group of 7 significant bits, at least 1.
    let bits = 64 - (value | 1).leading_zeros() as usize;
    bits.div_ceil(7)
}

/// How many bytes `value` takes zigzag-encoded.
pub fn len_i64(value: i64) -> usize {
    len_u64(zigzag(value))
}

fn zigzag(value: i64) -> u64 {
    ((value << 1) ^ (value >> 63)) as u64
}

fn unzigzag(value: u64) -> i64 {
    ((value >> 1) as i64) ^ -((value & 1) as i64)
}

/// Why a varint could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VarintError {
    /// The input ended inside the varint.
    Truncated,
    /// More than 10 bytes, or bits beyond the 64th.
    Overflow,
}

/// Reads a varint from the front of `input`, returning it and the bytes it took.
pub fn get_u64(input: &[u8]) -> Result<(u64, usize), VarintError> {
    let mut value = 0u64;
    for (i, &byte) in input.iter().enumerate().take(MAX_VARINT_LEN) {
        let bits = u64::from(byte & 0x7f);
        if i == MAX_VARINT_LEN - 1 && bits > 1 {
            return Err(VarintError::Overflow);
        }
        value |= bits << (7 * i);
        if byte & 0x80 == 0 {
            return Ok((value, i + 1));
        }
    }
    if input.len() >= MAX_VARINT_LEN {
        Err(VarintError::Overflow)
    } else {
        Err(VarintError::Truncated)
    }
}

/// Reads a zigzag varint from the front of `input`.
pub fn get_i64(input: &[u8]) -> Result<(i64, usize), VarintError> {
    get_u64(input).map(|(v, n)| (unzigzag(v), n))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrips_and_lengths_agree() {
        for v in [
            0u64,
            1,
            127,
            128,
            300,
            16_383,
            16_384,
            u32::MAX as u64,
            u64::MAX - 1,
            u64::MAX,
        ] {
            let mut out = Vec::new();
            put_u64(&mut out, v);
            assert_eq!(out.len(), len_u64(v), "{v}");
            assert_eq!(get_u64(&out), Ok((v, out.len())));
        }
        for v in [0i64, 1, -1, 63, -64, 64, -65, i64::MAX, i64::MIN] {
            let mut out = Vec::new();
            put_i64(&mut out, v);
            assert_eq!(out.len(), len_i64(v), "{v}");
            assert_eq!(get_i64(&out), Ok((v, out.len())));
        }
    }

    #[test]
    fn rejects_truncated_and_overlong() {
        assert_eq!(get_u64(&[]), Err(VarintError::Truncated));
        assert_eq!(get_u64(&[0x80, 0x80]), Err(VarintError::Truncated));
        assert_eq!(get_u64(&[0xff; 11]), Err(VarintError::Overflow));
        // 10th byte carrying more than the 64th bit.
        let mut bad = vec![0xff; 9];
        bad.push(0x02);
        assert_eq!(get_u64(&bad), Err(VarintError::Overflow));
    }
}
