//! SQLite's own page cache, with one walk taken out of every commit.
//!
//! A commit ends by dropping cached pages past the database's end
//! (`xTruncate`). SQLite's cache (pcache1) does that by walking its whole
//! hash table whenever the largest key it ever cached lies far past the
//! end, and a b-tree balance sets that key to the page after the lock-byte
//! page (262,145 at 4 KiB pages): it renumbers split pages through it. So
//! after every commit that split a page, on a database under 1 GiB, the
//! writer walked its ~4,200 cached pages (the bundled SQLite shares one
//! page budget among all connections, and the writer holds most of it):
//! 5–10% of the server's CPU during `bench/run.sh unicast-rest`.
//!
//! This wrapper keeps SQLite's cache and answers that question itself: it
//! knows the largest key it has handed out (and how many pages sit at the
//! balance's temporary key), so a truncate that cannot find a page is not
//! passed on. Any other call goes straight through.

use std::os::raw::{c_int, c_uint};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use rusqlite::ffi;

/// Truncates passed on to SQLite's cache, and those answered here.
pub static TRUNCATES_PASSED: AtomicU64 = AtomicU64::new(0);
pub static TRUNCATES_SKIPPED: AtomicU64 = AtomicU64::new(0);

/// SQLite's own methods, which every call ends in.
struct Pcache1(ffi::sqlite3_pcache_methods2);
// SAFETY: the methods are plain C functions and a pointer SQLite itself
// passes to them; SQLite calls them from any thread.
unsafe impl Send for Pcache1 {}
unsafe impl Sync for Pcache1 {}

static PCACHE1: OnceLock<Pcache1> = OnceLock::new();

/// Puts the wrapper in place. Must run before SQLite is first used in the
/// process (`sqlite3_config` refuses afterwards); returns whether it is in
/// place. Idempotent.
pub fn install() -> bool {
    static INSTALLED: OnceLock<bool> = OnceLock::new();
    *INSTALLED.get_or_init(|| {
        // SAFETY: sqlite3_config copies the struct it is given; both calls
        // are refused (SQLITE_MISUSE) once SQLite is initialized, and then
        // nothing is changed.
        unsafe {
            let mut default: ffi::sqlite3_pcache_methods2 = std::mem::zeroed();
            if ffi::sqlite3_config(
                ffi::SQLITE_CONFIG_GETPCACHE2,
                &mut default as *mut ffi::sqlite3_pcache_methods2,
            ) != ffi::SQLITE_OK
                || default.xCreate.is_none()
            {
                return false;
            }
            let ours = ffi::sqlite3_pcache_methods2 {
                xCreate: Some(create),
                xCachesize: Some(cachesize),
                xPagecount: Some(pagecount),
                xFetch: Some(fetch),
                xUnpin: Some(unpin),
                xRekey: Some(rekey),
                xTruncate: Some(truncate),
                xDestroy: Some(destroy),
                xShrink: Some(shrink),
                ..default
            };
            let _ = PCACHE1.set(Pcache1(default));
            ffi::sqlite3_config(
                ffi::SQLITE_CONFIG_PCACHE2,
                &ours as *const ffi::sqlite3_pcache_methods2,
            ) == ffi::SQLITE_OK
        }
    })
}

/// What one cache (one connection's pager) holds beside SQLite's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Keys {
    /// No page of the cache has a larger key, except at `temp`.
    max: c_uint,
    /// The key a b-tree balance parks a page at while it renumbers: the
    /// page after the lock-byte page (SQLite's `PENDING_BYTE` at 1 GiB).
    temp: c_uint,
    /// Pages rekeyed to `temp` minus pages rekeyed away from it.
    at_temp: i64,
}

impl Keys {
    fn new(page_size: c_int) -> Keys {
        Keys {
            max: 0,
            temp: (0x4000_0000 / page_size.max(512) as c_uint) + 1,
            at_temp: 0,
        }
    }

    fn fetched(&mut self, key: c_uint) {
        self.max = self.max.max(key);
    }

    fn rekeyed(&mut self, old: c_uint, new: c_uint) {
        if new == self.temp {
            self.at_temp += 1;
        } else {
            self.fetched(new);
        }
        if old == self.temp {
            self.at_temp -= 1;
        }
    }

    /// Whether a truncate at `limit` (drop every key >= limit) can find a
    /// page. A page fetched at `temp` (a database over 1 GiB) raised `max`
    /// to it, so a miscount of `at_temp` can only err towards passing on.
    fn may_hold_from(&self, limit: c_uint) -> bool {
        self.max >= limit || (self.at_temp > 0 && self.temp >= limit)
    }

    /// After SQLite's truncate at `limit`: nothing at or past it is left.
    fn truncated(&mut self, limit: c_uint) {
        self.max = self.max.min(limit.saturating_sub(1));
        if limit <= self.temp {
            self.at_temp = 0;
        }
    }
}

struct Cache {
    inner: *mut ffi::sqlite3_pcache,
    keys: Keys,
}

fn methods() -> &'static ffi::sqlite3_pcache_methods2 {
    // Set before the wrapper was handed to SQLite, so before any call here.
    &PCACHE1.get().expect("installed").0
}

/// # Safety
/// `p` is a cache made by `create` (SQLite passes back what it got), used
/// by one connection at a time (SQLite holds that connection's mutex).
unsafe fn cache<'a>(p: *mut ffi::sqlite3_pcache) -> &'a mut Cache {
    &mut *(p as *mut Cache)
}

unsafe extern "C" fn create(
    page_size: c_int,
    extra: c_int,
    purgeable: c_int,
) -> *mut ffi::sqlite3_pcache {
    let Some(create) = methods().xCreate else {
        return std::ptr::null_mut();
    };
    let inner = create(page_size, extra, purgeable);
    if inner.is_null() {
        return inner;
    }
    let cache = Box::new(Cache {
        inner,
        keys: Keys::new(page_size),
    });
    Box::into_raw(cache) as *mut ffi::sqlite3_pcache
}

unsafe extern "C" fn cachesize(p: *mut ffi::sqlite3_pcache, n: c_int) {
    if let Some(f) = methods().xCachesize {
        f(cache(p).inner, n)
    }
}

unsafe extern "C" fn pagecount(p: *mut ffi::sqlite3_pcache) -> c_int {
    methods().xPagecount.map_or(0, |f| f(cache(p).inner))
}

unsafe extern "C" fn fetch(
    p: *mut ffi::sqlite3_pcache,
    key: c_uint,
    create_flag: c_int,
) -> *mut ffi::sqlite3_pcache_page {
    let cache = cache(p);
    if create_flag != 0 {
        cache.keys.fetched(key);
    }
    match methods().xFetch {
        Some(f) => f(cache.inner, key, create_flag),
        None => std::ptr::null_mut(),
    }
}

unsafe extern "C" fn unpin(
    p: *mut ffi::sqlite3_pcache,
    page: *mut ffi::sqlite3_pcache_page,
    discard: c_int,
) {
    if let Some(f) = methods().xUnpin {
        f(cache(p).inner, page, discard)
    }
}

unsafe extern "C" fn rekey(
    p: *mut ffi::sqlite3_pcache,
    page: *mut ffi::sqlite3_pcache_page,
    old: c_uint,
    new: c_uint,
) {
    let cache = cache(p);
    cache.keys.rekeyed(old, new);
    if let Some(f) = methods().xRekey {
        f(cache.inner, page, old, new)
    }
}

unsafe extern "C" fn truncate(p: *mut ffi::sqlite3_pcache, limit: c_uint) {
    let cache = cache(p);
    if !cache.keys.may_hold_from(limit) {
        TRUNCATES_SKIPPED.fetch_add(1, Ordering::Relaxed);
        return;
    }
    TRUNCATES_PASSED.fetch_add(1, Ordering::Relaxed);
    if let Some(f) = methods().xTruncate {
        f(cache.inner, limit)
    }
    cache.keys.truncated(limit);
}

unsafe extern "C" fn destroy(p: *mut ffi::sqlite3_pcache) {
    let cache = Box::from_raw(p as *mut Cache);
    if let Some(f) = methods().xDestroy {
        f(cache.inner)
    }
}

unsafe extern "C" fn shrink(p: *mut ffi::sqlite3_pcache) {
    if let Some(f) = methods().xShrink {
        f(cache(p).inner)
    }
}

#[cfg(test)]
mod tests {
    use super::Keys;

    #[test]
    fn a_commit_after_a_balance_skips_the_truncate() {
        let mut keys = Keys::new(4096);
        assert_eq!(keys.temp, 262_145);
        for key in 1..=900 {
            keys.fetched(key);
        }
        // balance_nonroot swaps pages 700 and 800 through the temporary key
        keys.rekeyed(700, keys.temp);
        keys.rekeyed(800, 700);
        keys.rekeyed(keys.temp, 800);
        // the commit: the database has 900 pages, drop keys >= 901
        assert!(!keys.may_hold_from(901));
    }

    #[test]
    fn pages_past_the_end_are_truncated() {
        let mut keys = Keys::new(4096);
        for key in 1..=1000 {
            keys.fetched(key);
        }
        // a rolled-back transaction that had grown the file to 1000 pages
        assert!(keys.may_hold_from(901));
        keys.truncated(901);
        assert!(!keys.may_hold_from(901));
        assert!(keys.may_hold_from(900));
    }

    #[test]
    fn a_page_parked_at_the_temporary_key_is_truncated() {
        let mut keys = Keys::new(4096);
        keys.fetched(10);
        keys.rekeyed(5, keys.temp);
        assert!(keys.may_hold_from(11));
        keys.truncated(11);
        assert!(!keys.may_hold_from(11));
    }

    #[test]
    fn a_real_page_at_the_temporary_key_counts_as_fetched() {
        // A database over 1 GiB: the key after the lock-byte page is a
        // real page; rekeying it away must not hide another one parked there.
        let mut keys = Keys::new(4096);
        keys.fetched(keys.temp);
        keys.rekeyed(keys.temp, 5);
        keys.rekeyed(7, keys.temp);
        assert!(keys.may_hold_from(keys.temp));
    }
}
