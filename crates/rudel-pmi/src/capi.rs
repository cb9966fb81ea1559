//! The PMI-1 C API (`pmi.h`) that MPI libraries call: Open MPI's `pmix/flux` component
//! dlopens this library (`FLUX_PMI_LIBRARY_PATH`) and calls these by name.
//!
//! Every function takes C pointers from the MPI library; each checks them for null and
//! writes at most the length it is given. Errors are printed once to stderr with their
//! reason, because the calling MPI library reports only a number.
#![allow(non_snake_case)]
use std::ffi::{c_char, c_int, CStr};
use std::sync::Mutex;

use crate::client::{Client, PmiError};
use crate::wire::{is_value, is_word, KEYLEN_MAX, KVSNAME_MAX, VALLEN_MAX};

pub const PMI_SUCCESS: c_int = 0;
pub const PMI_FAIL: c_int = -1;
pub const PMI_ERR_INIT: c_int = 1;
pub const PMI_ERR_INVALID_ARG: c_int = 3;
pub const PMI_ERR_INVALID_KEY: c_int = 4;
pub const PMI_ERR_INVALID_VAL: c_int = 6;
pub const PMI_ERR_INVALID_LENGTH: c_int = 8;

/// The process's one connection; PMI-1 is a per-process API.
static CLIENT: Mutex<Option<Client>> = Mutex::new(None);

fn report(what: &str, e: &PmiError) -> c_int {
    eprintln!("rudel-pmi: {what}: {e}");
    PMI_FAIL
}

/// Runs `f` on the connection; PMI_ERR_INIT before PMI_Init.
fn with(f: impl FnOnce(&mut Client) -> c_int) -> c_int {
    let Ok(mut guard) = CLIENT.lock() else {
        return PMI_FAIL;
    };
    match guard.as_mut() {
        Some(c) => f(c),
        None => PMI_ERR_INIT,
    }
}

/// Writes `v` to `*out` if `out` is not null.
unsafe fn put_int(out: *mut c_int, v: i32) -> c_int {
    if out.is_null() {
        return PMI_ERR_INVALID_ARG;
    }
    *out = v;
    PMI_SUCCESS
}

/// A C string argument as &str, if it is one.
unsafe fn arg<'a>(p: *const c_char) -> Option<&'a str> {
    if p.is_null() {
        return None;
    }
    CStr::from_ptr(p).to_str().ok()
}

/// Copies `s` and its terminating NUL into `out` of `len` bytes.
unsafe fn copy_out(s: &str, out: *mut c_char, len: c_int) -> c_int {
    let Ok(len) = usize::try_from(len) else {
        return PMI_ERR_INVALID_LENGTH;
    };
    if out.is_null() {
        return PMI_ERR_INVALID_ARG;
    }
    if s.len() + 1 > len {
        return PMI_ERR_INVALID_LENGTH;
    }
    std::ptr::copy_nonoverlapping(s.as_ptr().cast::<c_char>(), out, s.len());
    *out.add(s.len()) = 0;
    PMI_SUCCESS
}

/// # Safety
/// `spawned` is null or points to a writable int.
#[no_mangle]
pub unsafe extern "C" fn PMI_Init(spawned: *mut c_int) -> c_int {
    let Ok(mut guard) = CLIENT.lock() else {
        return PMI_FAIL;
    };
    if guard.is_none() {
        match Client::connect_from_env() {
            Ok(c) => *guard = Some(c),
            Err(e) => return report("PMI_Init", &e),
        }
    }
    if !spawned.is_null() {
        *spawned = 0;
    }
    PMI_SUCCESS
}

/// # Safety
/// `initialized` points to a writable int.
#[no_mangle]
pub unsafe extern "C" fn PMI_Initialized(initialized: *mut c_int) -> c_int {
    let on = CLIENT.lock().map(|g| g.is_some()).unwrap_or(false);
    put_int(initialized, i32::from(on))
}

#[no_mangle]
pub extern "C" fn PMI_Finalize() -> c_int {
    let Ok(mut guard) = CLIENT.lock() else {
        return PMI_FAIL;
    };
    match guard.take() {
        Some(mut c) => match c.finalize() {
            Ok(()) => PMI_SUCCESS,
            Err(e) => report("PMI_Finalize", &e),
        },
        None => PMI_SUCCESS,
    }
}

/// # Safety
/// `size` points to a writable int.
#[no_mangle]
pub unsafe extern "C" fn PMI_Get_size(size: *mut c_int) -> c_int {
    with(|c| put_int(size, c.size))
}

/// # Safety
/// `rank` points to a writable int.
#[no_mangle]
pub unsafe extern "C" fn PMI_Get_rank(rank: *mut c_int) -> c_int {
    with(|c| put_int(rank, c.rank))
}

/// # Safety
/// `size` points to a writable int.
#[no_mangle]
pub unsafe extern "C" fn PMI_Get_universe_size(size: *mut c_int) -> c_int {
    with(|c| put_int(size, c.size))
}

/// # Safety
/// `appnum` points to a writable int.
#[no_mangle]
pub unsafe extern "C" fn PMI_Get_appnum(appnum: *mut c_int) -> c_int {
    with(|_| put_int(appnum, 0))
}

#[no_mangle]
pub extern "C" fn PMI_Barrier() -> c_int {
    with(|c| match c.barrier() {
        Ok(()) => PMI_SUCCESS,
        Err(e) => report("PMI_Barrier", &e),
    })
}

/// Tells srun the job aborts, then exits this process with `code` (PMI-1 semantics).
///
/// # Safety
/// `msg` is null or a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn PMI_Abort(code: c_int, msg: *const c_char) -> c_int {
    let text = arg(msg).unwrap_or("");
    eprintln!("rudel-pmi: aborting the job: {text}");
    // try_lock: another thread may sit in PMI_Barrier holding the connection; then srun
    // learns of the abort from the connection closing without finalize when we exit.
    if let Ok(mut guard) = CLIENT.try_lock() {
        if let Some(c) = guard.as_mut() {
            if let Err(e) = c.abort(code, text) {
                report("PMI_Abort", &e);
            }
        }
    }
    std::process::exit(code)
}

/// # Safety
/// `kvsname` points to `length` writable bytes.
#[no_mangle]
pub unsafe extern "C" fn PMI_KVS_Get_my_name(kvsname: *mut c_char, length: c_int) -> c_int {
    with(|c| copy_out(&c.kvsname, kvsname, length))
}

/// # Safety
/// `length` points to a writable int.
#[no_mangle]
pub unsafe extern "C" fn PMI_KVS_Get_name_length_max(length: *mut c_int) -> c_int {
    put_int(length, KVSNAME_MAX as i32)
}

/// # Safety
/// `length` points to a writable int.
#[no_mangle]
pub unsafe extern "C" fn PMI_KVS_Get_key_length_max(length: *mut c_int) -> c_int {
    put_int(length, KEYLEN_MAX as i32)
}

/// # Safety
/// `length` points to a writable int.
#[no_mangle]
pub unsafe extern "C" fn PMI_KVS_Get_value_length_max(length: *mut c_int) -> c_int {
    put_int(length, VALLEN_MAX as i32)
}

/// # Safety
/// The three arguments are NUL-terminated strings.
#[no_mangle]
pub unsafe extern "C" fn PMI_KVS_Put(kvsname: *const c_char, key: *const c_char, value: *const c_char) -> c_int {
    let (Some(_), Some(key), Some(value)) = (arg(kvsname), arg(key), arg(value)) else {
        return PMI_ERR_INVALID_ARG;
    };
    if !is_word(key, KEYLEN_MAX) {
        return PMI_ERR_INVALID_KEY;
    }
    // A newline would become another message on the wire.
    if !is_value(value, VALLEN_MAX) {
        return PMI_ERR_INVALID_VAL;
    }
    with(|c| match c.put(key, value) {
        Ok(()) => PMI_SUCCESS,
        Err(e) => report("PMI_KVS_Put", &e),
    })
}

/// Puts are sent at once, so there is nothing left to commit.
///
/// # Safety
/// `kvsname` is a NUL-terminated string (unused).
#[no_mangle]
pub unsafe extern "C" fn PMI_KVS_Commit(_kvsname: *const c_char) -> c_int {
    with(|_| PMI_SUCCESS)
}

/// PMI_FAIL without a message when no rank put `key`: MPI libraries probe keys.
///
/// # Safety
/// `kvsname` and `key` are NUL-terminated strings; `value` points to `length` writable bytes.
#[no_mangle]
pub unsafe extern "C" fn PMI_KVS_Get(
    kvsname: *const c_char,
    key: *const c_char,
    value: *mut c_char,
    length: c_int,
) -> c_int {
    let (Some(_), Some(key)) = (arg(kvsname), arg(key)) else {
        return PMI_ERR_INVALID_ARG;
    };
    if !is_word(key, KEYLEN_MAX) {
        return PMI_ERR_INVALID_KEY;
    }
    with(|c| match c.get(key) {
        Ok(Some(v)) => copy_out(&v, value, length),
        Ok(None) => PMI_FAIL,
        Err(e) => report("PMI_KVS_Get", &e),
    })
}

/// # Safety
/// `size` points to a writable int.
#[no_mangle]
pub unsafe extern "C" fn PMI_Get_clique_size(size: *mut c_int) -> c_int {
    with(|c| put_int(size, c.clique.len() as i32))
}

/// # Safety
/// `ranks` points to `length` writable ints.
#[no_mangle]
pub unsafe extern "C" fn PMI_Get_clique_ranks(ranks: *mut c_int, length: c_int) -> c_int {
    with(|c| {
        if ranks.is_null() {
            return PMI_ERR_INVALID_ARG;
        }
        if usize::try_from(length).map_or(true, |l| l < c.clique.len()) {
            return PMI_ERR_INVALID_LENGTH;
        }
        for (i, r) in c.clique.iter().enumerate() {
            *ranks.add(i) = *r;
        }
        PMI_SUCCESS
    })
}
