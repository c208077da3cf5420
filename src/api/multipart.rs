//! `multipart/form-data` bodies (RFC 7578 over RFC 2046's framing), parsed from a body already
//! read whole (the server caps its size): each [`Part`] borrows its data from the body. The
//! search for delimiters is linear (`memchr::memmem`), part headers are bounded
//! ([`MAX_PART_HEADER`]) and so is the number of parts ([`MAX_PARTS`]).

use memchr::memmem;

use super::parse::{split_params, unquote};

/// The most parts a body may have (qBittorrent's `torrents/add` sends one per file).
pub const MAX_PARTS: usize = 1000;

/// The most bytes of headers one part may have.
pub const MAX_PART_HEADER: usize = 8 * 1024;

/// One part of a form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Part<'a> {
    /// The field's name (`Content-Disposition: form-data; name="..."`).
    pub name: String,
    /// The file name, for a file field.
    pub filename: Option<String>,
    /// The part's `Content-Type`, if it has one.
    pub content_type: Option<String>,
    /// Its content.
    pub data: &'a [u8],
}

/// Why a body is not a multipart form.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MultipartError {
    /// The boundary is empty or longer than 70 characters.
    #[error("the multipart boundary must be 1 to 70 characters")]
    BadBoundary,
    /// No delimiter line starts the first part.
    #[error("the body does not start with the multipart boundary")]
    NoStart,
    /// The body ends inside a part, or without the closing delimiter.
    #[error("the multipart body is cut short")]
    Truncated,
    /// A delimiter is followed by something other than a line end or `--`.
    #[error("a multipart delimiter is followed by garbage")]
    BadDelimiter,
    /// A part's headers are over [`MAX_PART_HEADER`] bytes, or not text.
    #[error("a part's headers are malformed or over {MAX_PART_HEADER} bytes")]
    BadHeaders,
    /// A part has no `Content-Disposition: form-data` with a name.
    #[error("a part has no form-data name")]
    NoName,
    /// More than [`MAX_PARTS`] parts.
    #[error("more than {MAX_PARTS} parts")]
    TooManyParts,
}

/// Parses `body` as a multipart form with `boundary` (as
/// [`multipart_boundary`](super::parse::multipart_boundary) reads it from the content type).
/// A preamble before the first delimiter and an epilogue after the last are ignored.
pub fn parse<'a>(body: &'a [u8], boundary: &str) -> Result<Vec<Part<'a>>, MultipartError> {
    if boundary.is_empty() || boundary.len() > 70 {
        return Err(MultipartError::BadBoundary);
    }
    // Every delimiter but a first one at the very start follows a line end.
    let delimiter = format!("\r\n--{boundary}");
    let finder = memmem::Finder::new(delimiter.as_bytes());
    let mut at = if body.starts_with(&delimiter.as_bytes()[2..]) {
        delimiter.len() - 2
    } else {
        finder.find(body).ok_or(MultipartError::NoStart)? + delimiter.len()
    };
    let mut parts = Vec::new();
    loop {
        // After a delimiter: `--` ends the body; else optional padding and a line end.
        let rest = &body[at..];
        if rest.starts_with(b"--") {
            return Ok(parts);
        }
        let pad = rest
            .iter()
            .take_while(|&&c| c == b' ' || c == b'\t')
            .count();
        let rest = &rest[pad..];
        if rest.is_empty() {
            return Err(MultipartError::Truncated);
        }
        if !rest.starts_with(b"\r\n") {
            return Err(MultipartError::BadDelimiter);
        }
        at += pad + 2;
        if parts.len() == MAX_PARTS {
            return Err(MultipartError::TooManyParts);
        }
        // The part's headers, up to an empty line.
        let window = &body[at..body.len().min(at + MAX_PART_HEADER + 4)];
        let (headers, data_at) = if window.starts_with(b"\r\n") {
            (&window[..0], at + 2)
        } else {
            match memmem::find(window, b"\r\n\r\n") {
                Some(end) => (&window[..end], at + end + 4),
                None if window.len() < MAX_PART_HEADER + 4 => {
                    return Err(MultipartError::Truncated)
                }
                None => return Err(MultipartError::BadHeaders),
            }
        };
        let headers = std::str::from_utf8(headers).map_err(|_| MultipartError::BadHeaders)?;
        let (name, filename, content_type) = part_headers(headers)?;
        let end = finder
            .find(&body[data_at..])
            .ok_or(MultipartError::Truncated)?;
        parts.push(Part {
            name,
            filename,
            content_type,
            data: &body[data_at..data_at + end],
        });
        at = data_at + end + delimiter.len();
    }
}

type PartHeaders = (String, Option<String>, Option<String>);

/// The name, file name and content type of a part's header lines.
fn part_headers(headers: &str) -> Result<PartHeaders, MultipartError> {
    let (mut name, mut filename, mut content_type) = (None, None, None);
    for line in headers.split("\r\n") {
        let (key, value) = line.split_once(':').ok_or(MultipartError::BadHeaders)?;
        let key = key.trim();
        if key.eq_ignore_ascii_case("content-disposition") {
            let mut params = split_params(value).into_iter();
            if !params
                .next()
                .is_some_and(|d| d.trim().eq_ignore_ascii_case("form-data"))
            {
                return Err(MultipartError::NoName);
            }
            for p in params {
                let Some((k, v)) = p.split_once('=') else {
                    continue;
                };
                let k = k.trim().to_ascii_lowercase();
                if k == "name" {
                    name = Some(unquote(v.trim()));
                } else if k == "filename" {
                    filename = Some(unquote(v.trim()));
                }
            }
        } else if key.eq_ignore_ascii_case("content-type") {
            content_type = Some(value.trim().to_string());
        }
    }
    Ok((name.ok_or(MultipartError::NoName)?, filename, content_type))
}

#[cfg(test)]
mod tests {
    use super::*;

    const BODY: &[u8] = b"preamble\r\n--AaB03x\r\n\
Content-Disposition: form-data; name=\"urls\"\r\n\
\r\n\
magnet:?xt=urn:btih:00\r\n\
--AaB03x  \r\n\
content-disposition: form-data; name=\"torrents\"; filename=\"a;b \\\"c\\\".torrent\"\r\n\
Content-Type: application/x-bittorrent\r\n\
\r\n\
d4:infoe\r\n--Aa\r\n\
--AaB03x\r\n\
Content-Disposition: form-data; name=\"empty\"\r\n\
\r\n\
\r\n\
--AaB03x--\r\nepilogue";

    #[test]
    fn parts_with_names_files_types_and_embedded_lookalikes() {
        let parts = parse(BODY, "AaB03x").unwrap();
        assert_eq!(parts.len(), 3);
        assert_eq!(parts[0].name, "urls");
        assert_eq!(parts[0].data, b"magnet:?xt=urn:btih:00");
        assert_eq!(parts[0].filename, None);
        assert_eq!(parts[1].name, "torrents");
        assert_eq!(parts[1].filename.as_deref(), Some("a;b \"c\".torrent"));
        assert_eq!(
            parts[1].content_type.as_deref(),
            Some("application/x-bittorrent")
        );
        assert_eq!(
            parts[1].data, b"d4:infoe\r\n--Aa",
            "a partial delimiter is data"
        );
        assert_eq!(parts[2].name, "empty");
        assert_eq!(parts[2].data, b"");
        // Starting at the very first byte, and no parts at all.
        let parts = parse(&BODY[10..], "AaB03x").unwrap();
        assert_eq!(parts.len(), 3);
        assert_eq!(parse(b"--x--", "x").unwrap(), []);
    }

    #[test]
    fn malformed_bodies_are_errors() {
        use MultipartError::*;
        let cases: [(&[u8], MultipartError); 8] = [
            (b"no delimiter here", NoStart),
            (
                b"--x\r\nContent-Disposition: form-data; name=a\r\n\r\ndata",
                Truncated,
            ),
            (
                b"--x\r\nContent-Disposition: form-data; name=a\r\n",
                Truncated,
            ),
            (b"--x", Truncated),
            (b"--xy\r\n", BadDelimiter),
            (
                b"--x\r\nContent-Disposition: attachment; name=a\r\n\r\n\r\n--x--",
                NoName,
            ),
            (b"--x\r\nContent-Type: text/plain\r\n\r\n\r\n--x--", NoName),
            (b"--x\r\nno colon\r\n\r\n\r\n--x--", BadHeaders),
        ];
        for (body, want) in cases {
            assert_eq!(
                parse(body, "x"),
                Err(want.clone()),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
        assert_eq!(parse(b"--\r\n", ""), Err(BadBoundary));
        let long = format!("--x\r\nX: {}\r\n\r\n\r\n--x--", "a".repeat(MAX_PART_HEADER));
        assert_eq!(parse(long.as_bytes(), "x"), Err(BadHeaders));
        let many = format!(
            "{}--x--",
            "--x\r\nContent-Disposition: form-data; name=a\r\n\r\n\r\n".repeat(MAX_PARTS + 1)
        );
        assert_eq!(parse(many.as_bytes(), "x"), Err(TooManyParts));
    }
}
