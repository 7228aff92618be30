//! Character sets for body rules that turn bytes into text and back.
//!
//! Labels follow the WHATWG Encoding Standard (`windows-1252`, `shift_jis`, `utf-16le`, …)
//! with two exceptions, because that standard reads them as browsers do rather than as
//! their names say: `iso-8859-1` (`latin-1`, `latin1`) is ISO 8859-1 exactly, every byte one
//! code point, and `us-ascii` (`ascii`) is 7-bit ASCII. Both directions are strict: a byte
//! sequence the charset does not define, or a character it cannot hold, is an error, never
//! a replacement character.

use encoding_rs::{Encoding, UTF_16BE, UTF_16LE};

/// A character set a body rule reads or writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Charset {
    /// ISO 8859-1: byte n is code point U+00nn.
    Latin1,
    /// 7-bit US-ASCII.
    Ascii,
    Whatwg(&'static Encoding),
}

/// Why a body could not be converted.
#[derive(Debug, PartialEq, thiserror::Error)]
pub enum CharsetError {
    #[error("the body is not valid {charset} (at byte {at})")]
    Malformed { charset: String, at: usize },
    #[error("the body holds {found:?}, which {charset} cannot encode")]
    Unmappable { charset: String, found: char },
}

impl Charset {
    /// Reads a label; `None` when it names no known charset.
    pub fn parse(label: &str) -> Option<Charset> {
        let label = label.trim().to_ascii_lowercase();
        match label.as_str() {
            "iso-8859-1" | "iso8859-1" | "iso_8859-1" | "latin-1" | "latin1" | "l1" => {
                Some(Charset::Latin1)
            }
            "us-ascii" | "ascii" => Some(Charset::Ascii),
            _ => Encoding::for_label_no_replacement(label.as_bytes()).map(Charset::Whatwg),
        }
    }

    /// The canonical name, as written in a `charset=` parameter.
    pub fn name(self) -> String {
        match self {
            Charset::Latin1 => "iso-8859-1".to_owned(),
            Charset::Ascii => "us-ascii".to_owned(),
            Charset::Whatwg(encoding) => encoding.name().to_ascii_lowercase(),
        }
    }

    /// Decodes `bytes` into text.
    pub fn decode(self, bytes: &[u8]) -> Result<String, CharsetError> {
        let malformed = |at| CharsetError::Malformed { charset: self.name(), at };
        match self {
            Charset::Latin1 => Ok(bytes.iter().map(|b| char::from(*b)).collect()),
            Charset::Ascii => match bytes.iter().position(|b| !b.is_ascii()) {
                Some(at) => Err(malformed(at)),
                None => Ok(bytes.iter().map(|b| char::from(*b)).collect()),
            },
            Charset::Whatwg(encoding) => {
                match encoding.decode_without_bom_handling_and_without_replacement(bytes) {
                    Some(text) => Ok(text.into_owned()),
                    None => Err(malformed(first_malformed(encoding, bytes))),
                }
            }
        }
    }

    /// Encodes `text` into bytes.
    pub fn encode(self, text: &str) -> Result<Vec<u8>, CharsetError> {
        let unmappable = |found| CharsetError::Unmappable { charset: self.name(), found };
        match self {
            Charset::Latin1 | Charset::Ascii => {
                let max = if self == Charset::Latin1 { 0xFF } else { 0x7F };
                text.chars()
                    .map(|c| u8::try_from(u32::from(c)).ok().filter(|b| *b <= max).ok_or(c))
                    .collect::<Result<Vec<u8>, char>>()
                    .map_err(unmappable)
            }
            // encoding_rs writes UTF-16 as UTF-8 (browsers never send UTF-16); write it here.
            Charset::Whatwg(encoding) if encoding == UTF_16LE || encoding == UTF_16BE => {
                let units = text.encode_utf16();
                Ok(if encoding == UTF_16LE {
                    units.flat_map(u16::to_le_bytes).collect()
                } else {
                    units.flat_map(u16::to_be_bytes).collect()
                })
            }
            Charset::Whatwg(encoding) => {
                let (bytes, _, lossy) = encoding.encode(text);
                if !lossy {
                    return Ok(bytes.into_owned());
                }
                let mut buffer = [0u8; 4];
                let found = text
                    .chars()
                    .find(|c| encoding.encode(c.encode_utf8(&mut buffer)).2)
                    .unwrap_or(char::REPLACEMENT_CHARACTER);
                Err(unmappable(found))
            }
        }
    }
}

/// The offset of the first byte `encoding` cannot decode (0 when it cannot be told).
fn first_malformed(encoding: &'static Encoding, bytes: &[u8]) -> usize {
    let mut decoder = encoding.new_decoder_without_bom_handling();
    let mut out = String::with_capacity(bytes.len() * 3 + 16);
    let (result, read) = decoder.decode_to_string_without_replacement(bytes, &mut out, true);
    match result {
        encoding_rs::DecoderResult::Malformed(bad, after) => {
            read.saturating_sub(usize::from(bad) + usize::from(after))
        }
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latin_1_is_iso_8859_1_not_windows_1252() {
        let latin1 = Charset::parse("Latin-1").expect("known");
        assert_eq!(latin1.decode(b"caf\xe9 \x80").as_deref(), Ok("café \u{80}"));
        assert_eq!(latin1.encode("café"), Ok(b"caf\xe9".to_vec()));
        let windows = Charset::parse("windows-1252").expect("known");
        assert_eq!(windows.decode(b"\x80").as_deref(), Ok("€"));
    }

    #[test]
    fn characters_a_charset_cannot_hold_are_errors() {
        let latin1 = Charset::Latin1;
        assert_eq!(
            latin1.encode("5 €"),
            Err(CharsetError::Unmappable { charset: "iso-8859-1".into(), found: '€' })
        );
        let ascii = Charset::parse("us-ascii").expect("known");
        assert_eq!(
            ascii.decode(b"ab\xe9"),
            Err(CharsetError::Malformed { charset: "us-ascii".into(), at: 2 })
        );
        let utf8 = Charset::parse("utf-8").expect("known");
        assert_eq!(
            utf8.decode(b"ok\xff"),
            Err(CharsetError::Malformed { charset: "utf-8".into(), at: 2 })
        );
        assert_eq!(
            Charset::parse("shift_jis").expect("known").encode("é"),
            Err(CharsetError::Unmappable { charset: "shift_jis".into(), found: 'é' })
        );
    }

    #[test]
    fn utf_16_is_written_as_utf_16() {
        let utf16 = Charset::parse("utf-16le").expect("known");
        assert_eq!(utf16.encode("hé"), Ok(vec![b'h', 0, 0xe9, 0]));
        assert_eq!(utf16.decode(&[b'h', 0, 0xe9, 0]).as_deref(), Ok("hé"));
        assert_eq!(Charset::parse("no-such-charset"), None);
    }
}
