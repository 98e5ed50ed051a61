//! The reference chunked decoder: RFC 9112 §7.1, strictly, written from the grammar and nothing
//! else (it shares no code or structure with Pingora's decoder, which is what it checks).
//!
//! ```text
//! chunked-body    = *chunk last-chunk trailer-section CRLF
//! chunk           = chunk-size [ chunk-ext ] CRLF chunk-data CRLF
//! chunk-size      = 1*HEXDIG
//! last-chunk      = 1*("0") [ chunk-ext ] CRLF
//! chunk-ext       = *( BWS ";" BWS chunk-ext-name [ BWS "=" BWS chunk-ext-val ] )
//! chunk-ext-name  = token
//! chunk-ext-val   = token / quoted-string
//! trailer-section = *( field-line CRLF )
//! field-line      = field-name ":" OWS field-value OWS
//! ```
//!
//! Strict means: CRLF only (no bare LF or CR), no whitespace after the chunk size unless a `;`
//! follows, extensions and trailer fields must match the grammar, no obs-fold.

/// How the input ends, for the reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// A complete chunked body; it ends at `end` (exclusive): bytes from there on belong to the
    /// next message on the connection.
    Complete { end: usize },
    /// The input is a valid prefix of a chunked body, and ended before the body did.
    Incomplete,
    /// Not a chunked body: the first byte that breaks the grammar is at `at`.
    Invalid { at: usize, why: &'static str },
}

/// The reference's reading of an input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decoded {
    pub outcome: Outcome,
    /// The chunk data decoded before the outcome (for `Invalid` and `Incomplete`, what had been
    /// read up to that point, including a chunk cut short).
    pub data: Vec<u8>,
    /// A valid body that a recipient may still refuse, and why (see [`MAX_SIZE_DIGITS`] and the
    /// limits below).
    pub refusable: Option<&'static str>,
}

/// Longest chunk-size (hex digits, leading zeros included) every recipient is expected to take.
/// RFC 9112 §7.1 tells recipients to "anticipate potentially large hexadecimal numerals and
/// prevent parsing errors due to integer conversion overflows"; refusing a longer numeral
/// (httparse stops at 15 digits, leading zeros included) is such prevention, so a body with a
/// longer chunk-size may be refused.
pub const MAX_SIZE_DIGITS: usize = 15;
/// A chunk-size line (size and extensions) longer than this may be refused (RFC 9112 §7.1.1: "a
/// server ought to limit the total length of chunk extensions received").
pub const MAX_CHUNK_HEAD: usize = 4096;
/// A trailer section longer than this may be refused (as any field section may be).
pub const MAX_TRAILERS: usize = 32 * 1024;

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn is_field_vchar(b: u8) -> bool {
    (0x21..=0x7e).contains(&b) || b >= 0x80
}

struct Reader<'a> {
    input: &'a [u8],
    i: usize,
}

/// Why reading stopped early.
enum Stop {
    Incomplete,
    Invalid(usize, &'static str),
}

type Step<T> = Result<T, Stop>;

impl Reader<'_> {
    fn peek(&self) -> Step<u8> {
        self.input.get(self.i).copied().ok_or(Stop::Incomplete)
    }

    fn invalid<T>(&self, why: &'static str) -> Step<T> {
        Err(Stop::Invalid(self.i, why))
    }

    fn ows(&mut self) -> Step<()> {
        while matches!(self.peek()?, b' ' | b'\t') {
            self.i += 1;
        }
        Ok(())
    }

    fn crlf(&mut self, why: &'static str) -> Step<()> {
        if self.peek()? != b'\r' {
            return self.invalid(why);
        }
        self.i += 1;
        if self.peek()? != b'\n' {
            return self.invalid(why);
        }
        self.i += 1;
        Ok(())
    }

    fn token(&mut self, why: &'static str) -> Step<()> {
        let start = self.i;
        while is_tchar(self.peek()?) {
            self.i += 1;
        }
        if self.i == start {
            return self.invalid(why);
        }
        Ok(())
    }

    fn quoted_string(&mut self) -> Step<()> {
        self.i += 1; // the opening DQUOTE
        loop {
            match self.peek()? {
                b'"' => {
                    self.i += 1;
                    return Ok(());
                }
                b'\\' => {
                    self.i += 1;
                    let b = self.peek()?;
                    if !(b == b'\t' || b == b' ' || is_field_vchar(b)) {
                        return self.invalid("bad quoted-pair in chunk extension");
                    }
                    self.i += 1;
                }
                b'\t' | b' ' | 0x21 | 0x23..=0x5b | 0x5d..=0x7e | 0x80..=0xff => self.i += 1,
                _ => return self.invalid("bad byte in quoted chunk extension value"),
            }
        }
    }

    /// `chunk-ext`, then the CRLF ending the chunk-size line.
    fn extensions_and_crlf(&mut self) -> Step<bool> {
        let mut any = false;
        loop {
            let before = self.i;
            self.ows()?;
            if self.peek()? != b';' {
                // BWS belongs to an extension only: "5 \r\n" is not a chunk-size line.
                self.i = before;
                break;
            }
            any = true;
            self.i += 1;
            self.ows()?;
            self.token("chunk extension name is not a token")?;
            let before = self.i;
            self.ows()?;
            if self.peek()? == b'=' {
                self.i += 1;
                self.ows()?;
                if self.peek()? == b'"' {
                    self.quoted_string()?;
                } else {
                    self.token("chunk extension value is not a token or quoted-string")?;
                }
            } else {
                self.i = before;
            }
        }
        self.crlf("chunk-size line does not end in CRLF")?;
        Ok(any)
    }

    fn trailers(&mut self) -> Step<()> {
        loop {
            if self.peek()? == b'\r' {
                return self.crlf("trailer section does not end in CRLF");
            }
            self.token("trailer field name is not a token")?;
            if self.peek()? != b':' {
                return self.invalid("trailer field line has no colon");
            }
            self.i += 1;
            loop {
                match self.peek()? {
                    b'\r' => break,
                    b if b == b'\t' || b == b' ' || is_field_vchar(b) => self.i += 1,
                    _ => return self.invalid("bad byte in trailer field value"),
                }
            }
            self.crlf("trailer field line does not end in CRLF")?;
        }
    }
}

/// Reads `input` as a chunked message body.
pub fn decode(input: &[u8]) -> Decoded {
    let mut r = Reader { input, i: 0 };
    let mut data = Vec::new();
    let mut refusable = None;
    let result: Step<()> = (|| loop {
        let line_start = r.i;
        let digits_start = r.i;
        let mut size: Option<u64> = Some(0);
        while let Some(d) = (r.peek()? as char).to_digit(16) {
            size = size.and_then(|s| s.checked_mul(16)).and_then(|s| s.checked_add(u64::from(d)));
            r.i += 1;
        }
        let digits = r.i - digits_start;
        if digits == 0 {
            return r.invalid("chunk-size has no hex digit");
        }
        if digits > MAX_SIZE_DIGITS {
            refusable.get_or_insert("chunk-size of more than 15 hex digits");
        }
        r.extensions_and_crlf()?;
        if r.i - line_start > MAX_CHUNK_HEAD {
            refusable.get_or_insert("chunk-size line over the limit");
        }
        let Some(size) = size else {
            // Larger than any body can be: no input ever completes it.
            return Err(Stop::Incomplete);
        };
        if size == 0 {
            let trailers_start = r.i;
            r.trailers()?;
            if r.i - trailers_start > MAX_TRAILERS {
                refusable.get_or_insert("trailer section over the limit");
            }
            return Ok(());
        }
        let available = (input.len() - r.i) as u64;
        if size > available {
            data.extend_from_slice(&input[r.i..]);
            return Err(Stop::Incomplete);
        }
        data.extend_from_slice(&input[r.i..r.i + size as usize]);
        r.i += size as usize;
        r.crlf("chunk-data is not followed by CRLF")?;
    })();
    let outcome = match result {
        Ok(()) => Outcome::Complete { end: r.i },
        Err(Stop::Incomplete) => Outcome::Incomplete,
        Err(Stop::Invalid(at, why)) => Outcome::Invalid { at, why },
    };
    if !matches!(outcome, Outcome::Complete { .. }) {
        refusable = None;
    }
    Decoded { outcome, data, refusable }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(input: &[u8]) -> Outcome {
        decode(input).outcome
    }

    #[test]
    fn valid_bodies() {
        let d = decode(b"5\r\nhello\r\n0\r\n\r\nGET / HTTP/1.1\r\n");
        assert_eq!(d.outcome, Outcome::Complete { end: 15 });
        assert_eq!(d.data, b"hello");
        assert_eq!(outcome(b"0\r\n\r\n"), Outcome::Complete { end: 5 });
        assert_eq!(outcome(b"000\r\n\r\n"), Outcome::Complete { end: 7 });
        assert_eq!(
            outcome(b"1;a=b ; c = \"d\\\"\"\r\nx\r\n0;z\r\nX-T: 1 \r\nY:\r\n\r\n"),
            Outcome::Complete { end: 42 }
        );
        let d = decode(b"A\r\n0123456789\r\na\r\n0123456789\r\n0\r\n\r\n");
        assert_eq!(d.data.len(), 20);
        let d = decode(b"0000000000000005\r\nhello\r\n0\r\n\r\n");
        assert_eq!(d.data, b"hello");
        assert_eq!(d.refusable, Some("chunk-size of more than 15 hex digits"));
    }

    #[test]
    fn incomplete_bodies() {
        for input in [&b""[..], b"5", b"5\r", b"5\r\nhel", b"5\r\nhello\r", b"5\r\nhello\r\n0\r\n", b"0\r\nX: y\r\n"] {
            assert_eq!(outcome(input), Outcome::Incomplete, "{:?}", input.escape_ascii().to_string());
        }
        assert_eq!(decode(b"5\r\nhel").data, b"hel");
        assert_eq!(outcome(b"10000000000000005\r\n"), Outcome::Incomplete);
        assert_eq!(outcome(b"ffffffffffffffffffff\r\nabc"), Outcome::Incomplete);
    }

    #[test]
    fn invalid_bodies() {
        let cases: &[(&[u8], usize)] = &[
            (b"\r\n", 0),
            (b"x\r\n", 0),
            (b"-5\r\n", 0),
            (b"0x5\r\n", 1),
            (b"5 \r\nhello\r\n", 1),
            (b"5\nhello\r\n", 1),
            (b"5\r\nhelloXX", 8),
            (b"5\r\nhello\n0\r\n\r\n", 8),
            (b"5;\r\n", 2),
            (b"5;a\nb\r\n", 3),
            (b"0\r\nfoo\r\n\r\n", 6),
            (b"0\r\n\n", 3),
            (b"0\r\n X: y\r\n\r\n", 3),
            (b"0\r\nX: a\x01\r\n\r\n", 7),
        ];
        for (input, at) in cases {
            match outcome(input) {
                Outcome::Invalid { at: got, .. } => assert_eq!(got, *at, "{:?}", input.escape_ascii().to_string()),
                other => panic!("{:?}: {other:?}", input.escape_ascii().to_string()),
            }
        }
    }
}
