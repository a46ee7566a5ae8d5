//! A case: the state of one workflow instance, 256 bytes, 64-byte aligned, no pointers.
use crate::{Error, Net};
use knhk_sys as sys;

/// Where a case stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CaseState {
    /// Work remains.
    Running,
    /// The output condition was marked (or nothing is left: implicit termination).
    Complete,
    /// Tokens remain, no task is enabled and nothing is busy.
    Deadlocked,
    /// The case was cancelled.
    Cancelled,
}

/// Case flags (see `knhk.h`).
pub mod flags {
    use knhk_sys as sys;
    /// Completed or cancelled.
    pub const DONE: u32 = sys::KNHK_FLAG_DONE;
    /// Reached completion.
    pub const COMPLETED: u32 = sys::KNHK_FLAG_COMPLETED;
    /// Cancelled (WCP-20).
    pub const CANCELLED: u32 = sys::KNHK_FLAG_CANCELLED;
    /// The output was marked while other work remained, which was cleared (WCP-43).
    pub const EXPLICIT_TERMINATION: u32 = sys::KNHK_FLAG_EXPLICIT_TERMINATION;
    /// Nothing marked and nothing busy (WCP-11).
    pub const IMPLICIT_TERMINATION: u32 = sys::KNHK_FLAG_IMPLICIT_TERMINATION;
}

/// One case. Owned by one thread at a time; operations go through [`Net`].
#[derive(Clone, Copy)]
#[repr(transparent)]
pub struct Case {
    pub(crate) raw: sys::knhk_case_t,
}

impl Case {
    /// A new case of `net`: a token on the input condition, registers zero.
    pub fn new(net: &Net) -> Result<Case, Error> {
        let mut case = Case {
            raw: sys::knhk_case_t::default(),
        };
        // SAFETY: both pointers come from live references; libknhk writes only *case.
        Error::check(unsafe { sys::knhk_case_init(&net.raw, &mut case.raw) })?;
        Ok(case)
    }

    /// Marked conditions, one bit each.
    #[inline]
    pub fn marking(&self) -> u64 {
        self.raw.marking
    }
    /// Started, not yet completed tasks, one bit each.
    #[inline]
    pub fn busy(&self) -> u64 {
        self.raw.busy
    }
    /// Number of successful operations on this case.
    #[inline]
    pub fn seq(&self) -> u64 {
        self.raw.seq
    }
    /// `flags::*` bits.
    #[inline]
    pub fn flags(&self) -> u32 {
        self.raw.flags
    }
    /// OR-join inputs still expected (WCP-7 side state).
    #[inline]
    pub fn or_expect(&self) -> u64 {
        self.raw.or_expect
    }
    /// Discriminator inputs whose next token is absorbed (WCP-9 side state).
    #[inline]
    pub fn absorb(&self) -> u64 {
        self.raw.absorb
    }
    /// The data registers guards read.
    #[inline]
    pub fn regs(&self) -> &[i64; crate::REGISTERS] {
        &self.raw.regs
    }
    /// The data registers, writable (e.g. to feed a task's output data before completing it).
    #[inline]
    pub fn regs_mut(&mut self) -> &mut [i64; crate::REGISTERS] {
        &mut self.raw.regs
    }
    /// True once the case has completed or been cancelled.
    #[inline]
    pub fn is_done(&self) -> bool {
        self.raw.flags & flags::DONE != 0
    }
    /// The raw C struct (read-only).
    pub fn as_raw(&self) -> &sys::knhk_case_t {
        &self.raw
    }

    // ---- saving and restoring (cold path; docs/kernel.md, "Saving and restoring cases") ----

    /// The case's [`CASE_BYTES`]-byte encoding (versioned, little-endian, CRC-32C-checked,
    /// bound to `net` by its fingerprint), for a checkpoint. Refuses a case that is not valid
    /// for `net` ([`Case::check`]'s errors) or an unsealed net.
    pub fn save(&self, net: &Net) -> Result<[u8; CASE_BYTES], Error> {
        let mut out = [0u8; CASE_BYTES];
        // SAFETY: the pointers come from live references; `out` is CASE_BYTES writable bytes
        // and libknhk writes at most `cap` = CASE_BYTES bytes (any alignment).
        Error::check(unsafe {
            sys::knhk_case_save(
                &net.raw,
                &self.raw,
                out.as_mut_ptr().cast(),
                CASE_BYTES as u64,
            )
        })?;
        Ok(out)
    }

    /// The case saved in `bytes` by [`Case::save`], when it fits `net`: the right length,
    /// format and checksum, saved from a net with `net`'s fingerprint, marking and busy bits
    /// only on conditions and tasks `net` has, flags, side words and state consistent with
    /// the marking, and the saved enabled set equal to the one `net`'s rules give. Any bytes
    /// are safe to pass: whatever is not such a case is an error.
    pub fn restore(net: &Net, bytes: &[u8]) -> Result<Case, Error> {
        let mut case = Case {
            raw: sys::knhk_case_t::default(),
        };
        // SAFETY: the pointers come from live references; libknhk reads at most `len` =
        // bytes.len() bytes from `bytes` (any alignment) and writes only *case.
        Error::check(unsafe {
            sys::knhk_case_restore(
                &net.raw,
                &mut case.raw,
                bytes.as_ptr().cast(),
                bytes.len() as u64,
            )
        })?;
        Ok(case)
    }

    /// Whether this is a valid case of `net`: the checks [`Case::restore`] applies to the
    /// decoded words. Every case made by [`Case::new`] and changed only by `net`'s operations
    /// (and [`Case::regs_mut`]) is valid; a case of another net may not be.
    pub fn check(&self, net: &Net) -> Result<(), Error> {
        // SAFETY: both pointers come from live references; libknhk only reads.
        Error::check(unsafe { sys::knhk_case_check(&net.raw, &self.raw) })
    }
}

/// Size of a saved case ([`Case::save`], [`Case::restore`]).
pub const CASE_BYTES: usize = sys::KNHK_CASE_BYTES as usize;

impl PartialEq for Case {
    fn eq(&self, o: &Case) -> bool {
        let (a, b) = (&self.raw, &o.raw);
        a.marking == b.marking
            && a.busy == b.busy
            && a.or_expect == b.or_expect
            && a.absorb == b.absorb
            && a.seq == b.seq
            && a.flags == b.flags
            && a.reserved == b.reserved
            && a.mi_live == b.mi_live
            && a.reserved2 == b.reserved2
            && a.regs == b.regs
            && a.mi.iter().zip(b.mi.iter()).all(|(x, y)| {
                x.started == y.started
                    && x.done == y.done
                    && x.base == y.base
                    && x.created == y.created
                    && x.completed == y.completed
                    && x.reserved == y.reserved
            })
    }
}
impl Eq for Case {}

impl core::fmt::Debug for Case {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Case")
            .field("marking", &format_args!("{:#x}", self.raw.marking))
            .field("busy", &format_args!("{:#x}", self.raw.busy))
            .field("or_expect", &format_args!("{:#x}", self.raw.or_expect))
            .field("absorb", &format_args!("{:#x}", self.raw.absorb))
            .field("seq", &self.raw.seq)
            .field("flags", &self.raw.flags)
            .field("regs", &self.raw.regs)
            .field("mi_live", &format_args!("{:#x}", self.raw.mi_live))
            .field(
                "mi",
                &self.raw.mi.map(|m| (m.created, m.base, m.started, m.done)),
            )
            .finish()
    }
}
