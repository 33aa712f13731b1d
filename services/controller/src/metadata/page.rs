//! Paging of topic listings: page sizes and page tokens.
//!
//! A page token is the hex encoding of the last topic name of the previous page; the next page
//! starts after that name. Clients must treat it as opaque: the encoding keeps them from
//! building tokens by hand and leaves room to change what it holds.

use dmq_proto::v1::TopicMetadata;

use super::error::MetadataError;

/// Topics per page when the request says 0.
pub const DEFAULT_PAGE_SIZE: u32 = 100;
/// The most topics one page holds; larger requests are served this many.
pub const MAX_PAGE_SIZE: u32 = 1000;

/// One page of a topic listing, all read at one metadata version.
#[derive(Clone, Debug, PartialEq)]
pub struct TopicPage {
    /// In name order.
    pub topics: Vec<TopicMetadata>,
    /// Pass it back for the next page; empty on the last page.
    pub next_page_token: String,
    pub metadata_version: u64,
}

/// The page size to serve: 0 means the default, and the size is capped at [`MAX_PAGE_SIZE`].
pub(super) fn effective_page_size(requested: u32) -> usize {
    match requested {
        0 => DEFAULT_PAGE_SIZE as usize,
        n => n.min(MAX_PAGE_SIZE) as usize,
    }
}

/// The token that continues a listing after `last_name`.
pub(super) fn encode_token(last_name: &str) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut token = String::with_capacity(last_name.len() * 2);
    for byte in last_name.bytes() {
        token.push(HEX[usize::from(byte >> 4)] as char);
        token.push(HEX[usize::from(byte & 0xf)] as char);
    }
    token
}

/// The topic name a token continues after; `None` for the empty token (the first page).
pub(super) fn decode_token(token: &str) -> Result<Option<String>, MetadataError> {
    if token.is_empty() {
        return Ok(None);
    }
    let invalid = || MetadataError::InvalidPageToken {
        token: token.to_string(),
    };
    if !token.len().is_multiple_of(2) {
        return Err(invalid());
    }
    let digit = |c: u8| match c {
        b'0'..=b'9' => Ok(c - b'0'),
        b'a'..=b'f' => Ok(c - b'a' + 10),
        _ => Err(invalid()),
    };
    let bytes = token
        .as_bytes()
        .chunks_exact(2)
        .map(|pair| Ok(digit(pair[0])? << 4 | digit(pair[1])?))
        .collect::<Result<Vec<u8>, MetadataError>>()?;
    String::from_utf8(bytes).map(Some).map_err(|_| invalid())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_junk_is_refused() {
        for name in ["a", "orders.v2", "x_-9"] {
            assert_eq!(
                decode_token(&encode_token(name)),
                Ok(Some(name.to_string()))
            );
        }
        assert_eq!(encode_token("ab"), "6162");
        assert_eq!(decode_token(""), Ok(None));
        for junk in ["6", "zz", "6G", "FF", "ff"] {
            let error = decode_token(junk).unwrap_err();
            assert_eq!(error.code(), tonic::Code::InvalidArgument, "{junk}");
        }
    }

    #[test]
    fn page_sizes_default_and_cap() {
        assert_eq!(effective_page_size(0), 100);
        assert_eq!(effective_page_size(7), 7);
        assert_eq!(effective_page_size(5000), 1000);
    }
}
