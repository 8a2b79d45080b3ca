//! Text encodings: telling a UTF-16/UTF-32 or binary object from UTF-8 by its first bytes,
//! and checking one record is UTF-8.

use super::Record;

/// Names the encoding or container of an object's first bytes when it is not UTF-8 text:
/// byte-order marks of UTF-16/32, the NUL bytes of UTF-16 without one, and compressed or
/// binary files that are often dropped by mistake.
pub fn foreign_encoding(head: &[u8]) -> Option<&'static str> {
    let known: [(&[u8], &str); 9] = [
        (
            b"\x00\x00\xFE\xFF",
            "UTF-32BE (byte-order mark 00 00 FE FF)",
        ),
        (
            b"\xFF\xFE\x00\x00",
            "UTF-32LE (byte-order mark FF FE 00 00)",
        ),
        (b"\xFE\xFF", "UTF-16BE (byte-order mark FE FF)"),
        (b"\xFF\xFE", "UTF-16LE (byte-order mark FF FE)"),
        (b"\x1F\x8B", "gzip-compressed (magic bytes 1F 8B)"),
        (
            b"\x28\xB5\x2F\xFD",
            "zstd-compressed (magic bytes 28 B5 2F FD)",
        ),
        (b"PK\x03\x04", "a ZIP archive (or an .xlsx workbook)"),
        (b"PAR1", "a Parquet file"),
        (b"BZh", "bzip2-compressed (magic bytes BZh)"),
    ];
    if let Some((_, name)) = known.iter().find(|(magic, _)| head.starts_with(magic)) {
        return Some(name);
    }
    let sample = &head[..head.len().min(512)];
    let nul = |parity: usize| {
        sample
            .iter()
            .skip(parity)
            .step_by(2)
            .filter(|&&b| b == 0)
            .count()
    };
    let pairs = sample.len() / 2;
    if pairs >= 2 {
        if nul(1) * 4 >= pairs * 3 && nul(0) == 0 {
            return Some("UTF-16LE (no byte-order mark; every other byte is NUL)");
        }
        if nul(0) * 4 >= pairs * 3 && nul(1) == 0 {
            return Some("UTF-16BE (no byte-order mark; every other byte is NUL)");
        }
    }
    if sample.contains(&0) {
        return Some("binary (it holds NUL bytes)");
    }
    None
}

/// Checks a record is UTF-8; the error names the first bad byte and guesses the encoding.
/// A faulty record's kept bytes may end inside a character, which is not an error.
pub fn check_utf8(record: &Record) -> Result<(), String> {
    match std::str::from_utf8(&record.bytes) {
        Ok(_) => Ok(()),
        Err(e) if e.error_len().is_none() && record.fault.is_some() => Ok(()),
        Err(e) => {
            let at = e.valid_up_to();
            let byte = record.bytes[at];
            let guess = if (0x80..=0xFF).contains(&byte) {
                "it looks like Latin-1 / Windows-1252"
            } else {
                "the encoding is unknown"
            };
            Err(format!(
                "not valid UTF-8 (byte 0x{byte:02X} at offset {} of the object); {guess}; sluice reads UTF-8 only: re-save the file as UTF-8 (for example `iconv -f WINDOWS-1252 -t UTF-8`)",
                record.offset + at as u64
            ))
        }
    }
}
