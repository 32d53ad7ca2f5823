//! Giving back the pages of a memory-mapped vectors file that the server no
//! longer reads in full. Once the 8-bit copy is built ([`super::prefilter`]),
//! a query reads a few hundred float32 rows, not all of them; the mapped
//! pages the copy was made from (2 GB at 1M × 512, all touched when the file
//! was opened and checked) would otherwise stay counted in the server's
//! memory beside the copy. They stay in the kernel's page cache, shared and
//! reclaimable; the rows re-scored after are read from there with `pread`
//! ([`crate::store::VectorSource::read_row`]), which maps nothing.

/// Unmaps the whole pages inside `data` from this process when — and only
/// when — they belong to read-only mappings of a file (checked in
/// `/proc/self/maps`): `MADV_DONTNEED` on such a mapping drops the pages from
/// the process and leaves the file's contents as they are. Memory of the
/// process's own (the heap: a JSONL index read whole) is left alone, as that
/// advice would zero it. Returns the bytes released (0 when nothing could be).
pub fn release_file_pages(data: &[f32]) -> usize {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: sysconf has no preconditions.
        let page = match unsafe { libc::sysconf(libc::_SC_PAGESIZE) } {
            p if p > 0 => p as usize,
            _ => return 0,
        };
        let start = (data.as_ptr() as usize).div_ceil(page) * page;
        let end = (data.as_ptr() as usize + std::mem::size_of_val(data)) / page * page;
        if end <= start || !read_only_file_mapping(start, end) {
            return 0;
        }
        // SAFETY: [start, end) lies within read-only file mappings (checked above):
        // MADV_DONTNEED only unmaps their pages, which fault back in from the file
        // unchanged, so the `&[f32]` borrowed over them stays valid and equal.
        let r =
            unsafe { libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_DONTNEED) };
        if r == 0 { end - start } else { 0 }
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = data;
        0
    }
}

/// Whether `[start, end)` is covered by mappings of a file (an absolute path
/// in `/proc/self/maps`) that are not writable.
#[cfg(target_os = "linux")]
fn read_only_file_mapping(start: usize, end: usize) -> bool {
    let Ok(maps) = std::fs::read_to_string("/proc/self/maps") else {
        return false;
    };
    covered(&maps, start, end)
}

/// [`read_only_file_mapping`] on the text of a maps file.
fn covered(maps: &str, start: usize, end: usize) -> bool {
    let mut at = start;
    let mut lines: Vec<(usize, usize, bool)> = maps
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let (lo, hi) = f.next()?.split_once('-')?;
            let perms = f.next()?;
            let path = f.nth(3).unwrap_or("");
            let ok = perms.as_bytes().get(1) == Some(&b'-') && path.starts_with('/');
            Some((
                usize::from_str_radix(lo, 16).ok()?,
                usize::from_str_radix(hi, 16).ok()?,
                ok,
            ))
        })
        .collect();
    lines.sort_unstable();
    for (lo, hi, ok) in lines {
        if hi <= at || lo > at {
            continue;
        }
        if !ok {
            return false;
        }
        at = hi;
        if at >= end {
            return true;
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_read_only_file_mappings_count() {
        let maps = "\
1000-3000 r--s 00000000 08:01 12 /data/v.npy
3000-5000 r--p 00002000 08:01 12 /data/v.npy
5000-6000 rw-p 00000000 00:00 0 [heap]
6000-7000 rw-s 00000000 08:01 13 /data/w.npy
7000-8000 r--p 00000000 00:00 0
";
        assert!(covered(maps, 0x1000, 0x5000));
        assert!(covered(maps, 0x2000, 0x3000));
        assert!(!covered(maps, 0x2000, 0x5800), "into the heap");
        assert!(!covered(maps, 0x6000, 0x7000), "writable");
        assert!(!covered(maps, 0x7000, 0x8000), "anonymous");
        assert!(!covered(maps, 0x0800, 0x2000), "starts before any mapping");
    }

    #[test]
    fn heap_memory_is_never_released() {
        let v = vec![1.5f32; 1 << 16];
        assert_eq!(release_file_pages(&v), 0);
        assert!(v.iter().all(|&x| x == 1.5));
    }

    #[test]
    fn a_mapped_file_is_released_and_reads_back_the_same() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("m.bin");
        let want: Vec<f32> = (0..(1 << 16)).map(|i| i as f32 * 0.25).collect();
        std::fs::write(&p, bytemuck::cast_slice(&want)).unwrap();
        let file = std::fs::File::open(&p).unwrap();
        // SAFETY: a private temporary file nobody else writes.
        let map = unsafe { memmap2::Mmap::map(&file) }.unwrap();
        let data: &[f32] = bytemuck::cast_slice(&map[..]);
        assert_eq!(data, &want[..]);
        assert_eq!(release_file_pages(data), 1 << 18);
        assert_eq!(data, &want[..]);
    }
}
