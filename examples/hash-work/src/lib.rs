//! # hash-work
//!
//! The work behind `GET /hash?kib=N` of `examples/http` (and of the Linux
//! peer's server, which serves the same route for `bench http`): real
//! work per request, for measuring how a service that computes scales
//! with cpus. The answer is the hex SHA-256 of N KiB (1 to 1024; 64 when
//! `kib` is not given) generated on the spot, 4 KiB at a time on the
//! stack, so a request costs cpu time and no memory: byte `i` of the input
//! is `(i * 7 + i / 251) as u8` (the `/ 251` term keeps the sequence from
//! repeating every 256 bytes). Anyone can check a digest with the same
//! generator (the tests do, on the host, with their own copy).

#![cfg_attr(not(test), no_std)]

extern crate alloc;

use alloc::string::String;
use core::fmt::Write;

use sha2::{Digest, Sha256};

/// The input size when the query names none.
pub const DEFAULT_KIB: usize = 64;
/// The largest input a request may ask for.
pub const MAX_KIB: usize = 1024;

/// Byte `i` of the generated input.
pub fn input_byte(i: usize) -> u8 {
    (i * 7 + i / 251) as u8
}

/// The `kib` of a query string (`kib=N`, alone; nothing or an empty query
/// means [`DEFAULT_KIB`]). `Err`: what is wrong, for a 400.
pub fn kib_of(query: Option<&str>) -> Result<usize, String> {
    let mut kib = DEFAULT_KIB;
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some(("kib", value)) => {
                kib =
                    value.parse().ok().filter(|n| (1..=MAX_KIB).contains(n)).ok_or_else(|| {
                        alloc::format!("kib must be a whole number from 1 to {MAX_KIB}, not {value:?}\n")
                    })?;
            }
            _ => return Err(alloc::format!("unknown query parameter {pair:?}: /hash takes kib=N (1 to {MAX_KIB})\n")),
        }
    }
    Ok(kib)
}

/// The lowercase hex SHA-256 of the first `kib` KiB of the input.
pub fn digest_hex(kib: usize) -> String {
    let mut hasher = Sha256::new();
    let mut chunk = [0u8; 4096];
    let total = kib * 1024;
    let mut offset = 0;
    while offset < total {
        let len = chunk.len().min(total - offset);
        for (j, byte) in chunk[..len].iter_mut().enumerate() {
            *byte = input_byte(offset + j);
        }
        hasher.update(&chunk[..len]);
        offset += len;
    }
    let mut hex = String::with_capacity(64);
    for byte in hasher.finalize() {
        let _ = write!(hex, "{byte:02x}");
    }
    hex
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_query_names_the_size() {
        assert_eq!(kib_of(None), Ok(DEFAULT_KIB));
        assert_eq!(kib_of(Some("")), Ok(DEFAULT_KIB));
        assert_eq!(kib_of(Some("kib=1")), Ok(1));
        assert_eq!(kib_of(Some("kib=1024")), Ok(1024));
        for bad in ["kib=0", "kib=1025", "kib=", "kib=-3", "kib=2.5", "kib=99999999999999999999999"] {
            assert!(kib_of(Some(bad)).unwrap_err().contains("from 1 to 1024"), "{bad}");
        }
        assert!(kib_of(Some("size=4")).unwrap_err().contains("unknown query parameter"));
    }

    #[test]
    fn digests_are_sha256_of_the_generated_bytes() {
        // Python: hashlib.sha256(bytes((i*7+i//251)&255 for i in range(N*1024))).hexdigest()
        assert_eq!(digest_hex(1), "02fb5322ef73ac36022788d2fd5e36e5f9c9ab03311d5c83dab1d877cc6d09d2");
        assert_eq!(digest_hex(64), "568f12ba93e8dab920795c710afd644df68be7132c0e49e8bb72270d8339bc40");
        assert_eq!((input_byte(0), input_byte(1), input_byte(251), input_byte(256)), (0, 7, 0xde, 0x01));
    }
}
