//! The messages between the coordinator (rank 0) and the workers. Every
//! message is a byte string of bounded size (one chunk of paths, one result,
//! one stats record): nothing grows with the dataset. Vectors travel as raw
//! little-endian f32, so they arrive bit-identical.
//!
//! ```text
//! worker → 0   REQUEST  (empty)                 "send me more work"
//! 0 → worker   WORK     u32 n, n × (u64 id, u32 len, path bytes, u8 still[, u64 segment]); n = 0: no more work
//!                       still: 0 no --skip-static segment, else 1 | 2 (anchor) | 4 (replay), then the segment
//! worker → 0   RESULT   u64 id, u8 0, 512 × f32 | u64 id, u8 1, UTF-8 error text | u64 id, u8 2, UTF-8 skipped text
//! worker → 0   STATS    JSON RankStats (after its last result)
//! 0 → worker   START    i32: 0 go, else stop with that exit code (before any work)
//! 0 → worker   FINISH   i32 exit code (after every rank's STATS)
//! ```

pub use crate::run::pipeline::Job;
use crate::video::still::StillStep;
use anyhow::{Result, bail, ensure};

pub type Tag = i32;
pub const TAG_REQUEST: Tag = 11;
pub const TAG_WORK: Tag = 12;
pub const TAG_RESULT: Tag = 13;
pub const TAG_STATS: Tag = 14;
pub const TAG_START: Tag = 15;
pub const TAG_FINISH: Tag = 16;
/// `knn`: rank 0 → worker, i32 code (0 go), u32 tile rows, bitmap of the finished blocks.
pub const TAG_KNN_START: Tag = 21;
/// `knn`: worker → 0, a run of its partial graph's rows: u64 first row, u32 rows,
/// rows·k u32 neighbours, rows·k f32 scores.
pub const TAG_KNN_ROWS: Tag = 22;

/// What one image gave.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    Vector(Vec<f32>),
    Error(String),
    /// A static video frame (`--skip-static`), with the reason.
    Skipped(String),
}

const STILL: u8 = 1;
const STILL_ANCHOR: u8 = 2;
const STILL_REPLAY: u8 = 4;

pub fn encode_work<'a>(jobs: impl IntoIterator<Item = &'a Job>) -> Vec<u8> {
    let mut out = vec![0u8; 4];
    let mut n = 0u32;
    for job in jobs {
        out.extend_from_slice(&job.id.to_le_bytes());
        out.extend_from_slice(&(job.path.len() as u32).to_le_bytes());
        out.extend_from_slice(job.path.as_bytes());
        match job.still {
            None => out.push(0),
            Some(s) => {
                out.push(
                    STILL
                        | if s.anchor { STILL_ANCHOR } else { 0 }
                        | if s.replay { STILL_REPLAY } else { 0 },
                );
                out.extend_from_slice(&s.segment.to_le_bytes());
            }
        }
        n += 1;
    }
    out[..4].copy_from_slice(&n.to_le_bytes());
    out
}

fn take<'a>(buf: &mut &'a [u8], n: usize) -> Result<&'a [u8]> {
    ensure!(buf.len() >= n, "truncated message");
    let (head, tail) = buf.split_at(n);
    *buf = tail;
    Ok(head)
}

fn take_u32(buf: &mut &[u8]) -> Result<u32> {
    Ok(u32::from_le_bytes(take(buf, 4)?.try_into().unwrap()))
}

fn take_u64(buf: &mut &[u8]) -> Result<u64> {
    Ok(u64::from_le_bytes(take(buf, 8)?.try_into().unwrap()))
}

pub fn decode_work(mut buf: &[u8]) -> Result<Vec<Job>> {
    let n = take_u32(&mut buf)? as usize;
    let mut jobs = Vec::with_capacity(n.min(1024));
    for _ in 0..n {
        let id = take_u64(&mut buf)?;
        let len = take_u32(&mut buf)? as usize;
        let path = String::from_utf8(take(&mut buf, len)?.to_vec())?;
        let flags = take(&mut buf, 1)?[0];
        let still = if flags & STILL != 0 {
            Some(StillStep {
                segment: take_u64(&mut buf)?,
                anchor: flags & STILL_ANCHOR != 0,
                replay: flags & STILL_REPLAY != 0,
            })
        } else {
            None
        };
        jobs.push(Job { id, path, still });
    }
    ensure!(buf.is_empty(), "trailing bytes in a work message");
    Ok(jobs)
}

pub fn encode_result(id: u64, outcome: &Outcome) -> Vec<u8> {
    let mut out = Vec::with_capacity(9 + 512 * 4);
    out.extend_from_slice(&id.to_le_bytes());
    match outcome {
        Outcome::Vector(v) => {
            out.push(0);
            for x in v {
                out.extend_from_slice(&x.to_le_bytes());
            }
        }
        Outcome::Error(e) => {
            out.push(1);
            out.extend_from_slice(e.as_bytes());
        }
        Outcome::Skipped(why) => {
            out.push(2);
            out.extend_from_slice(why.as_bytes());
        }
    }
    out
}

pub fn decode_result(mut buf: &[u8]) -> Result<(u64, Outcome)> {
    let id = take_u64(&mut buf)?;
    let kind = take(&mut buf, 1)?[0];
    let outcome = match kind {
        0 => {
            ensure!(
                buf.len().is_multiple_of(4),
                "a vector message of {} bytes",
                buf.len()
            );
            Outcome::Vector(
                buf.chunks_exact(4)
                    .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                    .collect(),
            )
        }
        1 => Outcome::Error(String::from_utf8_lossy(buf).into_owned()),
        2 => Outcome::Skipped(String::from_utf8_lossy(buf).into_owned()),
        k => bail!("unknown result kind {k}"),
    };
    Ok((id, outcome))
}

pub fn encode_code(code: i32) -> Vec<u8> {
    code.to_le_bytes().to_vec()
}

pub fn decode_code(buf: &[u8]) -> Result<i32> {
    ensure!(buf.len() == 4, "a code message of {} bytes", buf.len());
    Ok(i32::from_le_bytes(buf.try_into().unwrap()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn work_round_trips_including_odd_paths_and_still_steps() {
        let sent = vec![
            Job::new(7, "a b.jpg".into()),
            Job::new(u64::MAX, "ü/\r.png".into()),
            Job::new(0, "".into()),
            Job {
                id: 3,
                path: "v.mp4#t=1.000".into(),
                still: Some(StillStep {
                    segment: u64::MAX - 1,
                    anchor: true,
                    replay: true,
                }),
            },
            Job {
                id: 4,
                path: "v.mp4#t=2.000".into(),
                still: Some(StillStep {
                    segment: 0,
                    anchor: false,
                    replay: false,
                }),
            },
        ];
        let msg = encode_work(&sent);
        let jobs = decode_work(&msg).unwrap();
        assert_eq!(jobs, sent);
        assert!(decode_work(&encode_work(&[])).unwrap().is_empty());
        assert!(decode_work(&msg[..msg.len() - 1]).is_err());
    }

    #[test]
    fn results_round_trip_bit_exactly() {
        let v: Vec<f32> = (0..512)
            .map(|i| f32::from_bits(0x3f80_0001 + i * 7919))
            .collect();
        let (id, out) = decode_result(&encode_result(42, &Outcome::Vector(v.clone()))).unwrap();
        assert_eq!(id, 42);
        match out {
            Outcome::Vector(w) => {
                assert!(v.iter().zip(&w).all(|(a, b)| a.to_bits() == b.to_bits()))
            }
            _ => panic!(),
        }
        let (_, out) = decode_result(&encode_result(1, &Outcome::Error("bad ü".into()))).unwrap();
        assert_eq!(out, Outcome::Error("bad ü".into()));
        let skipped = Outcome::Skipped("static: mean abs diff 0.500 < 2".into());
        let (_, out) = decode_result(&encode_result(2, &skipped)).unwrap();
        assert_eq!(out, skipped);
    }
}
