//! Where a chunked body ends (RFC 9112 7.1), found while its bytes are forwarded as they are.

/// The longest chunk-size line (with extensions) or trailer line accepted.
const MAX_LINE: usize = 4096;

/// Where in a chunked body the next byte falls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// In a chunk-size line; `size` so far, `digits` seen, whether extensions began.
    Size {
        size: u64,
        digits: u8,
        ext: bool,
    },
    /// Expecting the `\n` that ends a chunk-size line.
    SizeLf {
        size: u64,
    },
    /// In chunk data, with this many bytes left.
    Data(u64),
    /// Expecting the `\r\n` after chunk data.
    DataCr,
    DataLf,
    /// At the start of a trailer line (an empty line ends the body).
    TrailerStart,
    /// In a trailer line.
    Trailer,
    /// Expecting the `\n` of a trailer line; `empty` when it ends the body.
    TrailerLf {
        empty: bool,
    },
    Done,
}

/// Follows a chunked body byte by byte (data in one step per chunk).
#[derive(Debug)]
pub struct Chunked {
    state: State,
    /// Bytes in the current size or trailer line.
    line: usize,
}

/// A chunked body that does not follow the grammar.
#[derive(Debug, PartialEq, Eq)]
pub struct Malformed;

impl Default for Chunked {
    fn default() -> Self {
        Self {
            state: State::Size {
                size: 0,
                digits: 0,
                ext: false,
            },
            line: 0,
        }
    }
}

impl Chunked {
    /// Whether the last chunk and the trailers have been seen.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Follow `bytes`; returns how many of them belong to the body (fewer than `bytes.len()`
    /// only when the body ends inside them).
    pub fn feed(&mut self, bytes: &[u8]) -> Result<usize, Malformed> {
        let mut i = 0;
        while i < bytes.len() {
            if let State::Data(left) = self.state {
                let take = left.min((bytes.len() - i) as u64);
                i += take as usize;
                self.state = if take == left {
                    State::DataCr
                } else {
                    State::Data(left - take)
                };
                continue;
            }
            self.step(bytes[i])?;
            i += 1;
            if self.state == State::Done {
                return Ok(i);
            }
        }
        Ok(i)
    }

    fn step(&mut self, b: u8) -> Result<(), Malformed> {
        self.line += 1;
        if self.line > MAX_LINE {
            return Err(Malformed);
        }
        self.state = match self.state {
            State::Size { size, digits, ext } => match b {
                b'\r' if digits > 0 => State::SizeLf { size },
                b'\r' | b'\n' => return Err(Malformed),
                _ if ext => State::Size { size, digits, ext },
                b';' if digits > 0 => State::Size {
                    size,
                    digits,
                    ext: true,
                },
                _ => {
                    let d = (b as char).to_digit(16).ok_or(Malformed)?;
                    if digits >= 15 {
                        return Err(Malformed);
                    }
                    State::Size {
                        size: size * 16 + u64::from(d),
                        digits: digits + 1,
                        ext,
                    }
                }
            },
            State::SizeLf { size } if b == b'\n' => {
                self.line = 0;
                if size == 0 {
                    State::TrailerStart
                } else {
                    State::Data(size)
                }
            }
            State::DataCr if b == b'\r' => State::DataLf,
            State::DataLf if b == b'\n' => {
                self.line = 0;
                State::Size {
                    size: 0,
                    digits: 0,
                    ext: false,
                }
            }
            State::TrailerStart if b == b'\r' => State::TrailerLf { empty: true },
            State::TrailerStart | State::Trailer if b == b'\r' => State::TrailerLf { empty: false },
            State::TrailerStart | State::Trailer if b != b'\n' => State::Trailer,
            State::TrailerLf { empty } if b == b'\n' => {
                self.line = 0;
                if empty {
                    State::Done
                } else {
                    State::TrailerStart
                }
            }
            _ => return Err(Malformed),
        };
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body_len(parts: &[&[u8]]) -> Result<Option<usize>, Malformed> {
        let mut c = Chunked::default();
        let mut total = 0;
        for p in parts {
            let n = c.feed(p)?;
            total += n;
            if c.is_done() {
                return Ok(Some(total));
            }
        }
        Ok(None)
    }

    #[test]
    fn the_end_is_found_with_bytes_after_it_left_alone() {
        let body = b"5\r\nhello\r\n3;ext=1\r\nabc\r\n0\r\n\r\nHTTP/1.1 200";
        assert_eq!(body_len(&[body]), Ok(Some(body.len() - 12)));
    }

    #[test]
    fn the_end_is_found_across_reads_of_one_byte() {
        let body = b"a\r\n0123456789\r\n0\r\nX-Trailer: 1\r\n\r\n";
        let bytes: Vec<&[u8]> = body.chunks(1).collect();
        assert_eq!(body_len(&bytes), Ok(Some(body.len())));
        assert_eq!(body_len(&[&body[..body.len() - 1]]), Ok(None));
    }

    #[test]
    fn broken_framing_is_refused() {
        for bad in [
            &b"x\r\n"[..],
            b"\r\n",
            b"5\r\nhello\n",
            b"5\nhello",
            b"fffffffffffffffff\r\n",
            b"0\r\n\n",
        ] {
            assert_eq!(body_len(&[bad]), Err(Malformed), "{bad:?}");
        }
    }
}
