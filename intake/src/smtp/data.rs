//! Message data of the bounce intake's SMTP server: the final dot,
//! dot-unstuffing and the size cap.

/// Where [`DotReader`] is within a line of message data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DotState {
    /// At the start of a line.
    LineStart,
    /// After a dot at the start of a line.
    Dot,
    /// After a dot and a CR at the start of a line.
    DotCr,
    /// Inside a line.
    Middle,
    /// After a CR inside a line.
    Cr,
}

/// Decodes SMTP message data (RFC 5321 §4.5.2): finds the final dot,
/// removes the dot that stuffs lines starting with one, writes every line
/// end as CRLF (bare LF tolerated), and keeps at most `max` bytes — past
/// that it only counts, so an oversize message costs no memory.
#[derive(Debug)]
pub(super) struct DotReader {
    state: DotState,
    data: Vec<u8>,
    max: usize,
    /// Bytes of decoded data seen, kept or not.
    total: u64,
    oversize: bool,
}

impl DotReader {
    pub(super) fn new(max: usize) -> Self {
        Self {
            state: DotState::LineStart,
            data: Vec::new(),
            max,
            total: 0,
            oversize: false,
        }
    }

    /// Decodes `input`; returns how many bytes were used, final dot line
    /// included, once it was found (the rest belongs to the next command).
    pub(super) fn feed(&mut self, input: &[u8]) -> Option<usize> {
        let mut i = 0;
        while i < input.len() {
            let b = input[i];
            match self.state {
                DotState::Middle => {
                    let run = input[i..]
                        .iter()
                        .position(|&c| c == b'\r' || c == b'\n')
                        .unwrap_or(input.len() - i);
                    if run > 0 {
                        self.push(&input[i..i + run]);
                        i += run;
                        continue;
                    }
                    if b == b'\r' {
                        self.state = DotState::Cr;
                    } else {
                        self.push(b"\r\n");
                        self.state = DotState::LineStart;
                    }
                    i += 1;
                }
                DotState::LineStart => {
                    if b == b'.' {
                        self.state = DotState::Dot;
                        i += 1;
                    } else {
                        self.state = DotState::Middle;
                    }
                }
                DotState::Dot => match b {
                    b'\r' => {
                        self.state = DotState::DotCr;
                        i += 1;
                    }
                    b'\n' => return Some(i + 1),
                    // A stuffed dot: dropped, the line goes on.
                    _ => self.state = DotState::Middle,
                },
                DotState::DotCr => {
                    if b == b'\n' {
                        return Some(i + 1);
                    }
                    // ".\r" and more: the dot was stuffing, the CR is data.
                    self.state = DotState::Cr;
                }
                DotState::Cr => {
                    if b == b'\n' {
                        self.push(b"\r\n");
                        self.state = DotState::LineStart;
                        i += 1;
                    } else {
                        self.push(b"\r");
                        self.state = DotState::Middle;
                    }
                }
            }
        }
        None
    }

    fn push(&mut self, bytes: &[u8]) {
        self.total = self.total.saturating_add(bytes.len() as u64);
        if self.oversize {
            return;
        }
        if self.data.len() + bytes.len() > self.max {
            self.oversize = true;
            self.data = Vec::new();
        } else {
            self.data.extend_from_slice(bytes);
        }
    }

    pub(super) fn oversize(&self) -> bool {
        self.oversize
    }

    pub(super) fn total(&self) -> u64 {
        self.total
    }

    pub(super) fn into_data(self) -> Vec<u8> {
        self.data
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(input: &[u8], max: usize) -> (Option<usize>, Vec<u8>, bool) {
        let mut d = DotReader::new(max);
        let used = d.feed(input);
        let over = d.oversize();
        (used, d.into_data(), over)
    }

    #[test]
    fn dot_reader_unstuffs_normalizes_and_stops_at_the_final_dot() {
        let cases: &[(&[u8], Option<usize>, &[u8])] = &[
            (b".\r\n", Some(3), b""),
            (b"a\r\n.\r\n", Some(6), b"a\r\n"),
            (b"a\r\n.\r\nMAIL", Some(6), b"a\r\n"),
            (b"..x\r\n.\r\n", Some(8), b".x\r\n"),
            (b"a\n..b\n.\n", Some(8), b"a\r\n.b\r\n"),
            (b"a\r\n..\r\n.\r\n", Some(10), b"a\r\n.\r\n"),
            (b"a\rb\r\n.\r\n", Some(8), b"a\rb\r\n"),
            (b".\rx\r\n.\r\n", Some(8), b"\rx\r\n"),
            (b"x.\r\n.\r\n", Some(7), b"x.\r\n"),
            (b"a\r\n.", None, b"a\r\n"),
            (b"a\r\n.x", None, b"a\r\nx"),
        ];
        for (input, used, data) in cases {
            let (u, d, _) = decode(input, 1000);
            assert_eq!(
                (u, d.as_slice()),
                (*used, *data),
                "{:?}",
                String::from_utf8_lossy(input)
            );
        }
    }

    #[test]
    fn dot_reader_finds_the_end_across_chunk_boundaries() {
        let input = b"l1\r\n..l2\nl3\r\n.\r\n";
        for split in 0..input.len() {
            let mut d = DotReader::new(1000);
            let (a, b) = input.split_at(split);
            let used = match d.feed(a) {
                Some(n) => n,
                None => a.len() + d.feed(b).expect("end found in the second chunk"),
            };
            assert_eq!(used, input.len(), "split at {split}");
            assert_eq!(d.into_data(), b"l1\r\n.l2\r\nl3\r\n", "split at {split}");
        }
    }

    #[test]
    fn dot_reader_keeps_nothing_past_the_cap_but_finds_the_end() {
        let (used, data, over) = decode(b"0123456789\r\nabc\r\n.\r\n", 8);
        assert_eq!(used, Some(20));
        assert!(over);
        assert!(data.is_empty());
        let (_, data, over) = decode(b"0123\r\n.\r\n", 6);
        assert!(!over);
        assert_eq!(data, b"0123\r\n");
    }
}
