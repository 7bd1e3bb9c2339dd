//! Line framing of child output (`lmsup::logs::pump::Framer`): 1 MiB of ~100-byte lines fed
//! in 64 KiB reads, as the pump does; alone; with a String and a formatted timestamp per
//! line (what a naive pump would do); one `Lines` buffer and one timestamp per read
//! (`pump_batch`); and as the pump does it now (`pump_in_place`: the read becomes its
//! `Lines` without a copy).

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use lmsup::logs::pump::Framer;
use lmsup::logs::Lines;

const TOTAL: usize = 1 << 20;
const CHUNK: usize = 64 * 1024;
const MAX_LINE: usize = 16 * 1024;
const TS_FORMAT: &str = "%Y-%m-%dT%H:%M:%S%.3f%:z";

/// ~1 MiB of 100-byte lines (99 bytes + '\n'), each with a sequence number.
fn input() -> Vec<u8> {
    let mut data = Vec::with_capacity(TOTAL + 128);
    let mut k = 0u64;
    while data.len() < TOTAL {
        let line = format!("L{k:08} {} E{k:08}\n", "x".repeat(80));
        data.extend_from_slice(line.as_bytes());
        k += 1;
    }
    data
}

fn bench_framing(c: &mut Criterion) {
    let data = input();
    let mut g = c.benchmark_group("framing_1MiB");
    g.throughput(Throughput::Bytes(data.len() as u64));

    g.bench_function("frame_only", |b| {
        b.iter(|| {
            let mut framer = Framer::new(MAX_LINE);
            let mut lines = 0usize;
            let mut bytes = 0usize;
            for chunk in data.chunks(CHUNK) {
                framer.push(black_box(chunk), |l, _| {
                    lines += 1;
                    bytes += l.len();
                });
            }
            framer.finish(|l, _| {
                lines += 1;
                bytes += l.len();
            });
            black_box((lines, bytes))
        })
    });

    g.bench_function("frame_utf8_timestamp", |b| {
        b.iter(|| {
            let mut framer = Framer::new(MAX_LINE);
            let mut out: Vec<(String, String)> = Vec::with_capacity(CHUNK / 64);
            let mut total = 0usize;
            for chunk in data.chunks(CHUNK) {
                framer.push(black_box(chunk), |l, _| {
                    let ts = chrono::Local::now().format(TS_FORMAT).to_string();
                    out.push((ts, String::from_utf8_lossy(l).into_owned()));
                });
                total += out.len();
                out.clear();
            }
            black_box(total)
        })
    });
    // Per read: the read's lines into one `Lines`, one timestamp.
    g.bench_function("pump_batch", |b| {
        per_read(b, &data, |framer, piece| {
            let mut lines = Lines::with_capacity(piece.len() + 256);
            framer.push(piece, |l, c| lines.push(l, c));
            lines
        })
    });
    // What the pump does now: the kept partial line first in the buffer, the read after it,
    // and the whole read framed where it lies (`prepare` + `frame`).
    g.bench_function("pump_in_place", |b| {
        per_read(b, &data, |framer, piece| {
            let mut chunk = Vec::with_capacity(CHUNK + MAX_LINE);
            framer.prepare(&mut chunk);
            chunk.extend_from_slice(piece);
            framer.frame(&mut chunk)
        })
    });
    g.finish();
}

/// The data in 64 KiB reads, each framed by `frame` into one batch with one timestamp.
fn per_read(
    b: &mut criterion::Bencher<'_>,
    data: &[u8],
    mut frame: impl FnMut(&mut Framer, &[u8]) -> Lines,
) {
    b.iter(|| {
        let mut framer = Framer::new(MAX_LINE);
        let mut total = 0usize;
        for piece in data.chunks(CHUNK) {
            let ts = chrono::Local::now().format(TS_FORMAT).to_string();
            let lines = frame(&mut framer, black_box(piece));
            total += lines.len() + ts.len();
            black_box(&lines);
        }
        black_box(total)
    })
}

criterion_group!(benches, bench_framing);
criterion_main!(benches);
