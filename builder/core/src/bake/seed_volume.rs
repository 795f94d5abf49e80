//! The NoCloud seed volume of one node: a 256 KiB FAT12 image labelled `CIDATA` holding
//! `meta-data`, `network-config` and `user-data`. Written in memory with `fatfs`; the
//! volume id comes from the contents and every timestamp is 1980-01-01, so the same files
//! give the same image.

use fatfs::{Date, DateTime, FileSystem, FormatVolumeOptions, FsOptions, Time, TimeProvider};
use sha2::{Digest, Sha256};
use std::io::{Cursor, Write};

pub const LABEL: &[u8; 11] = b"CIDATA     ";
pub const SIZE: usize = 256 * 1024;

#[derive(Debug)]
struct FixedTime;

impl TimeProvider for FixedTime {
    fn get_current_date(&self) -> Date {
        Date {
            year: 1980,
            month: 1,
            day: 1,
        }
    }
    fn get_current_date_time(&self) -> DateTime {
        DateTime {
            date: self.get_current_date(),
            time: Time {
                hour: 0,
                min: 0,
                sec: 0,
                millis: 0,
            },
        }
    }
}

static FIXED_TIME: FixedTime = FixedTime;

/// Builds the image from `(name, contents)` pairs.
pub fn build(files: &[(&str, &str)]) -> std::io::Result<Vec<u8>> {
    let mut h = Sha256::new();
    for (name, text) in files {
        h.update(name.as_bytes());
        h.update([0]);
        h.update(text.as_bytes());
        h.update([0]);
    }
    let d = h.finalize();
    let volume_id = u32::from_le_bytes([d[0], d[1], d[2], d[3]]);
    let mut disk = Cursor::new(vec![0u8; SIZE]);
    fatfs::format_volume(
        &mut disk,
        FormatVolumeOptions::new()
            .volume_label(*LABEL)
            .volume_id(volume_id),
    )?;
    disk.set_position(0);
    {
        let fs = FileSystem::new(
            &mut disk,
            FsOptions::new()
                .time_provider(&FIXED_TIME)
                .update_accessed_date(false),
        )?;
        {
            let root = fs.root_dir();
            for (name, text) in files {
                let mut f = root.create_file(name)?;
                f.truncate()?;
                f.write_all(text.as_bytes())?;
                f.flush()?;
            }
        }
        fs.unmount()?;
    }
    Ok(disk.into_inner())
}
