//! Header names as a peer spelt them (`header_case: preserve`), without a second header map.
//!
//! Pingora keeps a head's name spellings in a second header map beside the values, built,
//! cloned and dropped with every head. The own path keeps the head it read anyway, so it
//! keeps only where each field sits in it, and spells each name from there when it writes
//! the head on. A value parsed from the head still points into it, which tells its field
//! without searching the names. A value the proxy set takes the head's first spelling of its
//! name; a name the head lacks (one the proxy added) is written lowercase, as Pingora
//! writes the names the proxy adds.

use std::ops::Range;

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue};

/// Where each field of a head sits in its bytes.
pub struct Spellings {
    head: Bytes,
    /// Each field's name and value, as ranges of `head`, in the head's order.
    fields: Vec<(Range<usize>, Range<usize>)>,
}

impl Spellings {
    /// The spellings of `head`'s fields at `fields` (name and value ranges, in order).
    pub fn new(head: Bytes, fields: Vec<(Range<usize>, Range<usize>)>) -> Self {
        Self { head, fields }
    }

    /// Write `headers` as HTTP/1 fields (`name: value\r\n`), each name spelt as in the head.
    pub fn write_fields(&self, headers: &HeaderMap<HeaderValue>, out: &mut BytesMut) {
        let mut next = 0;
        for (name, value) in headers {
            out.extend_from_slice(self.spelling(name, value, &mut next));
            out.extend_from_slice(b": ");
            out.extend_from_slice(value.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
    }

    /// The spelling of `name` for `value`: that of the field `value` was read from, else
    /// the head's first spelling of `name`, else lowercase. `next` is the field after the
    /// last one found: a header map yields a head's fields in order unless a name repeats
    /// apart.
    fn spelling<'a>(
        &'a self,
        name: &'a HeaderName,
        value: &HeaderValue,
        next: &mut usize,
    ) -> &'a [u8] {
        let want = name.as_str().as_bytes();
        if let Some(i) = self.field_of(value, *next) {
            // A value copied from another field (`X-Forwarded-Host` from `Host`) has that
            // field's bytes but not its name.
            let spelt = &self.head[self.fields[i].0.clone()];
            if spells(spelt, want) {
                *next = i + 1;
                return spelt;
            }
        }
        self.fields
            .iter()
            .map(|(n, _)| &self.head[n.clone()])
            .find(|spelt| spells(spelt, want))
            .unwrap_or(want)
    }

    /// The field whose value `value` is (the same bytes of the head), trying `guess` first.
    fn field_of(&self, value: &HeaderValue, guess: usize) -> Option<usize> {
        let at = (value.as_bytes().as_ptr() as usize).checked_sub(self.head.as_ptr() as usize)?;
        if value.is_empty() || at >= self.head.len() {
            return None;
        }
        let starts_at = |i: usize| self.fields.get(i).is_some_and(|f| f.1.start == at);
        if starts_at(guess) {
            return Some(guess);
        }
        self.fields.binary_search_by_key(&at, |f| f.1.start).ok()
    }
}

/// Whether `spelt` is a spelling of the lowercase name `lowercase`. Every byte is compared,
/// without stopping at the first difference: names are short, and a loop without early
/// exits is one the compiler vectorizes.
fn spells(spelt: &[u8], lowercase: &[u8]) -> bool {
    spelt.len() == lowercase.len()
        && spelt
            .iter()
            .zip(lowercase)
            .fold(0, |diff, (a, b)| diff | (a.to_ascii_lowercase() ^ b))
            == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The spellings of a head of `fields` (`name: value` lines).
    fn spellings(fields: &[&str]) -> Spellings {
        let mut head = String::new();
        let mut ranges = Vec::new();
        for f in fields {
            let (name, value) = f.split_once(": ").unwrap();
            let start = head.len();
            head.push_str(f);
            head.push_str("\r\n");
            let value_start = start + name.len() + 2;
            ranges.push((
                start..start + name.len(),
                value_start..value_start + value.len(),
            ));
        }
        Spellings::new(Bytes::from(head), ranges)
    }

    fn written(s: &Spellings, headers: &HeaderMap) -> String {
        let mut out = BytesMut::new();
        s.write_fields(headers, &mut out);
        String::from_utf8(out.to_vec()).unwrap()
    }

    fn map(fields: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (n, v) in fields {
            m.append(*n, HeaderValue::from_static(v));
        }
        m
    }

    #[test]
    fn each_name_is_written_as_the_head_spelt_it() {
        let s = spellings(&["Host: x", "user-AGENT: t", "X-CuStOm: v"]);
        let m = map(&[("host", "x"), ("user-agent", "t"), ("x-custom", "v")]);
        assert_eq!(
            written(&s, &m),
            "Host: x\r\nuser-AGENT: t\r\nX-CuStOm: v\r\n"
        );
    }

    #[test]
    fn values_read_from_the_head_keep_their_fields_spelling() {
        let s = spellings(&["Set-Cookie: a", "X-A: 1", "set-COOKIE: b"]);
        let head = s.head.clone();
        let value =
            |r: &Range<usize>| HeaderValue::from_maybe_shared(head.slice(r.clone())).unwrap();
        let mut m = HeaderMap::new();
        for (n, v) in &s.fields {
            m.append(HeaderName::from_bytes(&head[n.clone()]).unwrap(), value(v));
        }
        assert_eq!(
            written(&s, &m),
            "Set-Cookie: a\r\nset-COOKIE: b\r\nX-A: 1\r\n"
        );
    }

    #[test]
    fn a_value_copied_from_another_field_keeps_its_own_name() {
        let s = spellings(&["Host: shop.example"]);
        let host = HeaderValue::from_maybe_shared(s.head.slice(6..18)).unwrap();
        let mut m = HeaderMap::new();
        m.append("host", host.clone());
        m.append("x-forwarded-host", host);
        assert_eq!(
            written(&s, &m),
            "Host: shop.example\r\nx-forwarded-host: shop.example\r\n"
        );
    }

    #[test]
    fn a_spelling_matches_its_lowercase_name_only() {
        assert!(spells(b"X-CuStOm", b"x-custom"));
        assert!(spells(b"host", b"host"));
        assert!(!spells(b"Host", b"hose"));
        assert!(!spells(b"Host", b"hos"));
        assert!(!spells(b"X-^", b"x-~"), "only letters fold");
    }

    #[test]
    fn names_the_proxy_added_are_lowercase_and_appended_values_take_the_first_spelling() {
        let s = spellings(&["X-Forwarded-For: a"]);
        let m = map(&[
            ("x-forwarded-for", "a"),
            ("x-forwarded-for", "b"),
            ("via", "1.1 switchyard"),
        ]);
        assert_eq!(
            written(&s, &m),
            "X-Forwarded-For: a\r\nX-Forwarded-For: b\r\nvia: 1.1 switchyard\r\n"
        );
    }
}
