//! What a run leaves behind besides checkpoints: `metrics.jsonl` (one JSON object per logged
//! step), TensorBoard event files, and a loss-curve picture (`loss.svg`).

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value};

use crate::{Result, TrainError};

pub struct RunLog {
    dir: PathBuf,
    metrics: File,
    events: TensorBoardWriter,
}

impl RunLog {
    /// Opens the logs of a run directory. On resume, metrics after `resume_step` (logged by the
    /// interrupted run after its last checkpoint) are dropped so the file reads as one run.
    pub fn open(dir: &Path, resume_step: Option<u64>) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(|e| TrainError::io(dir, e))?;
        let path = dir.join("metrics.jsonl");
        match resume_step {
            Some(step) if path.exists() => truncate_after(&path, step)?,
            None if path.exists() => std::fs::remove_file(&path).map_err(|e| TrainError::io(&path, e))?,
            _ => {}
        }
        let metrics = OpenOptions::new().create(true).append(true).open(&path).map_err(|e| TrainError::io(&path, e))?;
        let events = TensorBoardWriter::create(dir)?;
        Ok(Self { dir: dir.to_path_buf(), metrics, events })
    }

    /// Appends `{"step": step, ...scalars}` and the scalars to TensorBoard.
    pub fn log(&mut self, step: u64, scalars: &[(&str, f64)]) -> Result<()> {
        let mut object = Map::new();
        object.insert("step".into(), Value::from(step));
        for (name, value) in scalars {
            object.insert((*name).to_string(), serde_json::Number::from_f64(*value).map_or(Value::Null, Value::Number));
        }
        let path = self.dir.join("metrics.jsonl");
        writeln!(self.metrics, "{}", Value::Object(object)).map_err(|e| TrainError::io(&path, e))?;
        self.metrics.flush().map_err(|e| TrainError::io(&path, e))?;
        self.events.scalars(step, scalars)
    }

    /// Draws `name` over steps from metrics.jsonl into `<name>.svg`.
    pub fn plot(&self, name: &str) -> Result<PathBuf> {
        let points = read_series(&self.dir.join("metrics.jsonl"), name)?;
        let out = self.dir.join(format!("{name}.svg"));
        std::fs::write(&out, svg_line_chart(name, &points)).map_err(|e| TrainError::io(&out, e))?;
        Ok(out)
    }
}

/// Keeps the JSONL records of `path` whose `step` is at most `step` (a resumed run's files then
/// read as one run).
pub fn truncate_after(path: &Path, step: u64) -> Result<()> {
    let file = File::open(path).map_err(|e| TrainError::io(path, e))?;
    let kept: Vec<String> = BufReader::new(file)
        .lines()
        .map_while(std::result::Result::ok)
        .filter(|line| serde_json::from_str::<Value>(line).ok().and_then(|v| v["step"].as_u64()).is_some_and(|s| s <= step))
        .collect();
    let mut text = kept.join("\n");
    if !text.is_empty() {
        text.push('\n');
    }
    std::fs::write(path, text).map_err(|e| TrainError::io(path, e))
}

/// (step, value) pairs of one metric in a metrics.jsonl file.
pub fn read_series(path: &Path, name: &str) -> Result<Vec<(f64, f64)>> {
    let file = File::open(path).map_err(|e| TrainError::io(path, e))?;
    Ok(BufReader::new(file)
        .lines()
        .map_while(std::result::Result::ok)
        .filter_map(|line| {
            let v: Value = serde_json::from_str(&line).ok()?;
            Some((v["step"].as_f64()?, v[name].as_f64()?))
        })
        .collect())
}

fn svg_line_chart(title: &str, points: &[(f64, f64)]) -> String {
    let (w, h, margin) = (640.0, 360.0, 48.0);
    let (x0, x1) = points.iter().fold((f64::MAX, f64::MIN), |(a, b), p| (a.min(p.0), b.max(p.0)));
    let (y0, y1) = points.iter().fold((f64::MAX, f64::MIN), |(a, b), p| (a.min(p.1), b.max(p.1)));
    let sx = |x: f64| margin + (x - x0) / (x1 - x0).max(1e-12) * (w - 2.0 * margin);
    let sy = |y: f64| h - margin - (y - y0) / (y1 - y0).max(1e-12) * (h - 2.0 * margin);
    let path: Vec<String> = points.iter().map(|&(x, y)| format!("{:.1},{:.1}", sx(x), sy(y))).collect();
    format!(
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12">
<rect width="100%" height="100%" fill="white"/>
<text x="{cx}" y="20" text-anchor="middle" font-size="14">{title} over steps</text>
<line x1="{margin}" y1="{yb}" x2="{xr}" y2="{yb}" stroke="black"/><line x1="{margin}" y1="{margin}" x2="{margin}" y2="{yb}" stroke="black"/>
<text x="{margin}" y="{yl}" text-anchor="start">{x0}</text><text x="{xr}" y="{yl}" text-anchor="end">{x1}</text>
<text x="{yx}" y="{yt}" text-anchor="end">{y1:.3}</text><text x="{yx}" y="{yb}" text-anchor="end">{y0:.3}</text>
<polyline fill="none" stroke="#1f77b4" stroke-width="1.5" points="{points}"/>
</svg>
"##,
        cx = w / 2.0,
        yb = h - margin,
        xr = w - margin,
        yl = h - margin + 16.0,
        yx = margin - 4.0,
        yt = margin + 4.0,
        points = path.join(" "),
    )
}

/// Scalars in TensorBoard's event-file format: TFRecord framing (length, masked CRC-32C) around
/// `Event` protobufs, encoded by hand (three message types, a handful of fields).
pub struct TensorBoardWriter {
    file: File,
    path: PathBuf,
}

impl TensorBoardWriter {
    pub fn create(dir: &Path) -> Result<Self> {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
        let host = std::fs::read_to_string("/etc/hostname").unwrap_or_else(|_| "localhost".into());
        let path = dir.join(format!("events.out.tfevents.{}.{}.{}", now.as_secs(), host.trim(), std::process::id()));
        let file = File::create(&path).map_err(|e| TrainError::io(&path, e))?;
        let mut writer = Self { file, path };
        let mut event = Vec::new();
        proto_double(&mut event, 1, now.as_secs_f64());
        proto_bytes(&mut event, 3, b"brain.Event:2");
        writer.record(&event)?;
        Ok(writer)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn scalars(&mut self, step: u64, scalars: &[(&str, f64)]) -> Result<()> {
        let wall = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_secs_f64();
        let mut summary = Vec::new();
        for (tag, value) in scalars {
            let mut v = Vec::new();
            proto_bytes(&mut v, 1, tag.as_bytes());
            proto_fixed32(&mut v, 2, (*value as f32).to_bits());
            proto_bytes(&mut summary, 1, &v);
        }
        let mut event = Vec::new();
        proto_double(&mut event, 1, wall);
        proto_varint_field(&mut event, 2, step);
        proto_bytes(&mut event, 5, &summary);
        self.record(&event)
    }

    fn record(&mut self, data: &[u8]) -> Result<()> {
        let len = (data.len() as u64).to_le_bytes();
        let mut frame = Vec::with_capacity(data.len() + 16);
        frame.extend_from_slice(&len);
        frame.extend_from_slice(&masked_crc32c(&len).to_le_bytes());
        frame.extend_from_slice(data);
        frame.extend_from_slice(&masked_crc32c(data).to_le_bytes());
        self.file.write_all(&frame).and_then(|()| self.file.flush()).map_err(|e| TrainError::io(&self.path, e))
    }
}

fn proto_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn proto_varint_field(out: &mut Vec<u8>, field: u64, v: u64) {
    proto_varint(out, field << 3);
    proto_varint(out, v);
}

fn proto_double(out: &mut Vec<u8>, field: u64, v: f64) {
    proto_varint(out, (field << 3) | 1);
    out.extend_from_slice(&v.to_le_bytes());
}

fn proto_fixed32(out: &mut Vec<u8>, field: u64, v: u32) {
    proto_varint(out, (field << 3) | 5);
    out.extend_from_slice(&v.to_le_bytes());
}

fn proto_bytes(out: &mut Vec<u8>, field: u64, bytes: &[u8]) {
    proto_varint(out, (field << 3) | 2);
    proto_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

/// CRC-32C (Castagnoli), bitwise: event files are small and written once per step.
fn crc32c(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &byte in data {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 != 0 { (crc >> 1) ^ 0x82F6_3B78 } else { crc >> 1 };
        }
    }
    !crc
}

fn masked_crc32c(data: &[u8]) -> u32 {
    let crc = crc32c(data);
    (crc.rotate_right(15)).wrapping_add(0xA282_EAD8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32c_matches_the_standard_check_value() {
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
    }

    #[test]
    fn event_records_are_framed_and_checksummed() {
        let dir = tempfile::tempdir().unwrap();
        let mut writer = TensorBoardWriter::create(dir.path()).unwrap();
        writer.scalars(3, &[("loss", 1.5)]).unwrap();
        let bytes = std::fs::read(writer.path()).unwrap();
        let mut at = 0;
        let mut records = 0;
        while at < bytes.len() {
            let len = u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap()) as usize;
            assert_eq!(u32::from_le_bytes(bytes[at + 8..at + 12].try_into().unwrap()), masked_crc32c(&bytes[at..at + 8]));
            let data = &bytes[at + 12..at + 12 + len];
            assert_eq!(u32::from_le_bytes(bytes[at + 12 + len..at + 16 + len].try_into().unwrap()), masked_crc32c(data));
            at += 16 + len;
            records += 1;
        }
        assert_eq!(records, 2);
        assert!(bytes.windows(4).any(|w| w == b"loss"));
    }

    #[test]
    fn resume_drops_metrics_logged_after_the_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = RunLog::open(dir.path(), None).unwrap();
        for step in 1..=5 {
            log.log(step, &[("loss", 10.0 - step as f64)]).unwrap();
        }
        drop(log);
        let mut log = RunLog::open(dir.path(), Some(3)).unwrap();
        log.log(4, &[("loss", 0.5)]).unwrap();
        let series = read_series(&dir.path().join("metrics.jsonl"), "loss").unwrap();
        assert_eq!(series, vec![(1.0, 9.0), (2.0, 8.0), (3.0, 7.0), (4.0, 0.5)]);
        assert!(log.plot("loss").unwrap().is_file());
    }
}
