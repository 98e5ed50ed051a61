//! A naive normalising backend: what a server that cleans up paths before serving them would
//! see, written from the description of such servers (and not from `gateway::safety`).
//!
//! ferry matches a path exactly as received, split on `/`. A backend that decodes and cleans the
//! path must end up with the same segments, or it serves another path than the one ferry's route
//! (and its policies) was chosen for.

/// The order in which a backend strips `;parameters` from segments; servers differ, and a path
/// ferry accepts must be safe for each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Params {
    /// Decode, then strip (`.%3Bx` is `.`).
    AfterDecoding,
    /// Strip, then decode (Tomcat-like: `..;x` is `..`, `.%3Bx` is `.;x`).
    BeforeDecoding,
    /// Never strip.
    Kept,
}

pub const ALL_PARAMS: [Params; 3] = [Params::AfterDecoding, Params::BeforeDecoding, Params::Kept];

/// Percent-decodes once; `None` when a `%` is not followed by two hex digits.
pub fn percent_decode(s: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        if s[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            let hi = (hex[0] as char).to_digit(16)?;
            let lo = (hex[1] as char).to_digit(16)?;
            out.push((hi * 16 + lo) as u8);
            i += 3;
        } else {
            out.push(s[i]);
            i += 1;
        }
    }
    Some(out)
}

fn strip_params(segment: &[u8]) -> &[u8] {
    segment.split(|b| *b == b';').next().unwrap_or_default()
}

/// The segments the backend serves: decode, `\` as `/`, split on `/`, strip parameters (per
/// `params`), resolve `.` and `..`.
pub fn normalise(path: &[u8], params: Params) -> Option<Vec<Vec<u8>>> {
    let decoded = match params {
        Params::BeforeDecoding => {
            // Parameters end at a literal `;`, before decoding; the rest is decoded after.
            let mut out = Vec::new();
            for (i, raw) in path.split(|b| *b == b'/').enumerate() {
                if i > 0 {
                    out.push(b'/');
                }
                out.extend(percent_decode(strip_params(raw))?);
            }
            out
        }
        _ => percent_decode(path)?,
    };
    let unified: Vec<u8> = decoded.iter().map(|&b| if b == b'\\' { b'/' } else { b }).collect();
    let mut segments: Vec<Vec<u8>> = Vec::new();
    let pieces: Vec<&[u8]> = unified.split(|b| *b == b'/').collect();
    let last = pieces.len() - 1;
    for (i, piece) in pieces.into_iter().enumerate() {
        let piece = if params == Params::AfterDecoding { strip_params(piece) } else { piece };
        match piece {
            b"." | b".." if i == 0 => segments.push(piece.to_vec()),
            b"." => {
                // "/a/." is "/a/": the directory itself.
                if i == last {
                    segments.push(Vec::new());
                }
            }
            b".." => {
                if segments.len() > 1 {
                    segments.pop();
                }
                if i == last {
                    segments.push(Vec::new());
                }
            }
            _ => segments.push(piece.to_vec()),
        }
    }
    Some(segments)
}

/// The segments ferry matched, as the same backend reads each of them on its own: ferry's raw
/// split on `/`, each piece decoded and stripped (per `params`), nothing resolved.
pub fn ferry_segments(path: &[u8], params: Params) -> Option<Vec<Vec<u8>>> {
    path.split(|b| *b == b'/')
        .map(|raw| match params {
            Params::AfterDecoding => percent_decode(raw).map(|d| strip_params(&d).to_vec()),
            Params::BeforeDecoding => percent_decode(strip_params(raw)),
            Params::Kept => percent_decode(raw),
        })
        .collect()
}

/// What is wrong with a path ferry accepted, if anything: a normalising backend would serve a
/// different path, or the decoded path has a control character.
pub fn accepted_path_problem(path: &[u8]) -> Option<String> {
    let Some(decoded) = percent_decode(path) else {
        return Some("accepted a path with invalid percent-encoding".into());
    };
    if let Some(c) = decoded.iter().find(|b| b.is_ascii_control()) {
        // A raw control byte never gets this far (the request line parser refuses it), so this is
        // an encoded one.
        return Some(format!("accepted a path with control character {c:#04x}"));
    }
    for params in ALL_PARAMS {
        let backend = normalise(path, params);
        let ferry = ferry_segments(path, params);
        if backend != ferry {
            return Some(format!(
                "a backend ({params:?}) normalises the path to {} segments {:?}, ferry matched {:?}",
                backend.as_ref().map_or(0, Vec::len),
                backend.map(|s| s.iter().map(|s| String::from_utf8_lossy(s).into_owned()).collect::<Vec<_>>()),
                ferry.map(|s| s.iter().map(|s| String::from_utf8_lossy(s).into_owned()).collect::<Vec<_>>()),
            ));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_naive_backend_sees_through_encodings() {
        let bad = [
            &b"/public/..%2fadmin/x"[..],
            b"/public/%2e%2e%2fadmin/x",
            b"/public/..;/admin",
            b"/public/..%5cadmin",
            b"/public\\..\\admin",
            b"/a/%2e/b",
            b"/a/.%3Bx/b",
            b"/a/b/..",
            b"/a%2fb",
            b"/a%00",
            b"/a%",
        ];
        for path in bad {
            assert!(accepted_path_problem(path).is_some(), "{}", String::from_utf8_lossy(path));
        }
        for path in [&b"/"[..], b"/a/b", b"//a", b"/a/...", b"/a;v=1/b", b"/%41%7e", b"/a/b;.", b"/a/.well-known", b""]
        {
            assert_eq!(accepted_path_problem(path), None, "{}", String::from_utf8_lossy(path));
        }
    }
}
