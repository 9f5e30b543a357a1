//! Text files as people make them: a UTF-8 byte-order mark (Windows editors, PowerShell's
//! `Out-File`) is accepted and dropped, and bytes that are not UTF-8 are reported with their line
//! and column instead of "stream did not contain valid UTF-8". Used for configs and SFT data.

use std::path::Path;

use crate::error::{Result, TrainError};

/// The UTF-8 byte-order mark.
pub const BOM: char = '\u{feff}';

/// The text of `path`, without a leading byte-order mark.
pub fn read_text(path: &Path) -> Result<String> {
    let bytes = std::fs::read(path).map_err(|e| TrainError::io(path, e))?;
    decode(path, bytes)
}

/// `bytes` (the contents of `path`) as text, without a leading byte-order mark.
pub fn decode(path: &Path, bytes: Vec<u8>) -> Result<String> {
    match String::from_utf8(bytes) {
        Ok(text) => Ok(match text.strip_prefix(BOM) {
            Some(rest) => rest.to_string(),
            None => text,
        }),
        Err(e) => {
            let at = e.utf8_error().valid_up_to();
            let bytes = e.as_bytes();
            let line = bytes[..at].iter().filter(|&&b| b == b'\n').count() + 1;
            let column = at - bytes[..at].iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1) + 1;
            Err(not_utf8(path, line, Some(column), bytes[at]))
        }
    }
}

/// The error for a line of `path` that is not UTF-8.
pub fn not_utf8(path: &Path, line: usize, column: Option<usize>, byte: u8) -> TrainError {
    let at = column.map_or(format!("{line}"), |c| format!("{line}:{c}"));
    TrainError::Data(format!("{}:{at}: not UTF-8 text (byte 0x{byte:02x}); save the file as UTF-8", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bom_is_dropped_and_invalid_utf8_is_named_by_line_and_column() {
        let path = Path::new("data.jsonl");
        assert_eq!(decode(path, b"\xef\xbb\xbf{\"a\": 1}\n".to_vec()).unwrap(), "{\"a\": 1}\n");
        assert_eq!(decode(path, b"plain\n".to_vec()).unwrap(), "plain\n");
        let err = decode(path, b"{\"a\": 1}\n{\"b\": \"caf\xe9\"}\n".to_vec()).unwrap_err().to_string();
        assert!(err.contains("data.jsonl:2:11: not UTF-8") && err.contains("0xe9"), "{err}");
    }
}
