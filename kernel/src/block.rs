//! Blocks: eight cases side by side (struct of arrays), for beats that load and store a field
//! of all eight cases at once (`knhk_block_fire`).
use crate::{Case, Error, Event, Net, BEAT_LANES};
use knhk_sys as sys;

/// The task value of a block lane with no event this beat ([`Net::block_fire`]).
pub const NO_TASK: u8 = sys::KNHK_NO_TASK as u8;

/// Eight cases of one net, lane `i` of every field being case `i` (the C `knhk_block_t`,
/// 896 bytes). Lanes are independent cases; copy one in or out with [`Block::set`] and
/// [`Block::get`].
#[derive(Clone, Copy)]
#[repr(transparent)]
pub struct Block {
    raw: sys::knhk_block_t,
}

impl Block {
    /// Eight fresh cases of `net` (a token on the input condition, registers zero).
    pub fn new(net: &Net) -> Result<Block, Error> {
        let mut raw = sys::knhk_block_t::default();
        // SAFETY: both pointers come from live references; libknhk writes only *raw.
        Error::check(unsafe { sys::knhk_block_init(net.as_raw(), &mut raw) })?;
        Ok(Block { raw })
    }

    /// A copy of lane `lane`, or None when `lane >= 8`.
    pub fn get(&self, lane: usize) -> Option<Case> {
        if lane >= BEAT_LANES {
            return None;
        }
        let mut raw = sys::knhk_case_t::default();
        // SAFETY: lane < 8 (checked above); both pointers come from live references.
        unsafe { sys::knhk_block_get(&self.raw, lane as u32, &mut raw) };
        Some(Case { raw })
    }

    /// Copies `case` into lane `lane`. Returns false (nothing written) when `lane >= 8`.
    pub fn set(&mut self, lane: usize, case: &Case) -> bool {
        if lane >= BEAT_LANES {
            return false;
        }
        // SAFETY: lane < 8 (checked above); both pointers come from live references.
        unsafe { sys::knhk_block_set(&mut self.raw, lane as u32, &case.raw) };
        true
    }

    /// The raw C struct (read-only).
    pub fn as_raw(&self) -> &sys::knhk_block_t {
        &self.raw
    }
}

impl PartialEq for Block {
    fn eq(&self, other: &Block) -> bool {
        (0..BEAT_LANES).all(|i| self.get(i) == other.get(i))
    }
}

impl Eq for Block {}

impl core::fmt::Debug for Block {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_list()
            .entries((0..BEAT_LANES).filter_map(|i| self.get(i)))
            .finish()
    }
}

/// Which code path a block beat takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockPath {
    /// AVX-512 where the CPU has it (chosen at run time), else scalar: `knhk_block_fire`.
    Best,
    /// The portable scalar path: `knhk_block_fire_scalar`.
    Scalar,
}

impl Net {
    /// Fires `tasks[8*k + i]` on lane `i` of `blocks[k]` (or nothing for [`NO_TASK`]) and
    /// writes each lane's raw status to `statuses[8*k + i]` (0 = OK, see
    /// [`Error::from_raw`]; [`Error::LaneIdle`] for `NO_TASK`). Each lane gets exactly what
    /// [`Net::fire`] would do to that case. Errors (nothing ran) when the slices' lengths are
    /// not 8 per block, or the net is not sealed.
    #[inline]
    pub fn block_fire(
        &self,
        blocks: &mut [Block],
        tasks: &[u8],
        statuses: &mut [u8],
        path: BlockPath,
    ) -> Result<(), Error> {
        let lanes = blocks.len() * BEAT_LANES;
        if tasks.len() != lanes || statuses.len() != lanes {
            return Err(Error::BadArgument);
        }
        let nblocks = u32::try_from(blocks.len()).map_err(|_| Error::BadArgument)?;
        let f = match path {
            BlockPath::Best => sys::knhk_block_fire,
            BlockPath::Scalar => sys::knhk_block_fire_scalar,
        };
        // SAFETY: Block is repr(transparent) over knhk_block_t, so `blocks` is a valid array
        // of nblocks C blocks; tasks and statuses hold exactly 8 * nblocks bytes (checked).
        Error::check(unsafe {
            f(
                self.as_raw(),
                blocks.as_mut_ptr().cast(),
                nblocks,
                tasks.as_ptr(),
                statuses.as_mut_ptr(),
            )
        })
    }

    /// Executes `events[i]` on lane `i` of `block` for every bit `i` set in `lanes` (any
    /// operation; the events' case_index is not read); `statuses[i]` receives lane i's raw
    /// status ([`Error::LaneIdle`] for a clear bit). Errors only for an unsealed net.
    pub fn block_beat(
        &self,
        block: &mut Block,
        events: &[Event; BEAT_LANES],
        lanes: u8,
        statuses: &mut [u8; BEAT_LANES],
    ) -> Result<(), Error> {
        // SAFETY: Event is repr(transparent) over knhk_event_t, so `events` is an array of 8
        // C events; statuses has 8 bytes; all pointers come from live references.
        Error::check(unsafe {
            sys::knhk_block_beat(
                self.as_raw(),
                &mut block.raw,
                events.as_ptr().cast(),
                u32::from(lanes),
                statuses.as_mut_ptr(),
            )
        })
    }
}
