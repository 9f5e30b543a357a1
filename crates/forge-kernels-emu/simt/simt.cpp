// The runtime behind simt.h: launches, fibers, barriers, warp exchanges, guarded buffers, the fault
// handler that turns an out-of-bounds access inside a kernel into an error of the launch, and the
// race tracker. Compiled without instrumentation: only the kernels' own accesses are tracked.
#include "simt.h"

#include <link.h>
#include <setjmp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <ucontext.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <map>
#include <mutex>
#include <thread>
#include <unordered_map>
#include <vector>

namespace simt {
namespace {

enum State { READY, AT_BLOCK_BARRIER, AT_WARP_EXCHANGE, EXITED };

constexpr size_t STACK_BYTES = 256 * 1024;
constexpr size_t SLOT_BYTES = 64;  // the largest warp-exchange deposit (mma operands: 24 bytes)

size_t page() {
  static const size_t bytes = (size_t)sysconf(_SC_PAGESIZE);
  return bytes;
}

// ---- race tracking: shadow cells ----------------------------------------------------------------
// One per byte of tracked memory: its last writer and last reader (global thread ids: block index ·
// threads per block + thread index) and the epochs they accessed it in (see "race tracking" below).
struct Cell {
  uint32_t writer, write_epoch;
  uint32_t reader, read_epoch;  // reader's top bits: the flags below
};
constexpr uint32_t OTHER_READERS = 1u << 31;  // another thread read it in read_epoch as well
constexpr uint32_t EARLIER_BLOCK = 1u << 30;  // a thread of an earlier block of the launch read it
constexpr uint32_t THREAD_MASK = EARLIER_BLOCK - 1;

// ---- guarded allocations ------------------------------------------------------------------------
struct Allocation {
  unsigned char* map;
  size_t map_bytes;
  size_t bytes;
  const char* name;
  std::thread::id owner;  // launches track the buffers of their own OS thread only
  Cell* cells;            // calloc'ed: pages the kernels never touch cost nothing
};
std::mutex registry_lock;
std::map<uintptr_t, Allocation> registry;  // by user pointer

// `bytes` whose end touches an inaccessible page (the start is rounded down to 16 bytes, so an
// overrun is caught within 15 bytes of the end, usually at once).
unsigned char* guarded_alloc(size_t bytes, const char* name) {
  const size_t data_pages = (bytes + 15 + page() - 1) / page();
  const size_t map_bytes = (data_pages + 1) * page();
  void* map = mmap(nullptr, map_bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (map == MAP_FAILED) return nullptr;
  unsigned char* guard = (unsigned char*)map + data_pages * page();
  mprotect(guard, page(), PROT_NONE);
  unsigned char* user = (unsigned char*)(((uintptr_t)(guard - bytes)) & ~(uintptr_t)15);
  Cell* cells = (Cell*)calloc(std::max<size_t>(bytes, 1), sizeof(Cell));
  if (cells == nullptr) {
    munmap(map, map_bytes);
    return nullptr;
  }
  std::lock_guard<std::mutex> hold(registry_lock);
  registry[(uintptr_t)user] = Allocation{(unsigned char*)map, map_bytes, bytes, name, std::this_thread::get_id(), cells};
  return user;
}

void guarded_free(void* user) {
  Allocation a;
  {
    std::lock_guard<std::mutex> hold(registry_lock);
    auto it = registry.find((uintptr_t)user);
    if (it == registry.end()) return;
    a = it->second;
    registry.erase(it);
  }
  munmap(a.map, a.map_bytes);
  free(a.cells);
}

// ---- launches -----------------------------------------------------------------------------------
// An issued cp.async: what lands at `dst` when its group is waited for (read at issue: the
// kernels' sources are inputs no launch writes).
struct AsyncCopy {
  unsigned char* dst;
  unsigned char bytes[16];
  long group;  // -1 until committed
};

// One memory access of a thread, for rebuilding its warp's requests: where in the kernel, which
// bytes (shared: the address; global: the buffer's number and the offset from its start, which on
// the GPU is 256-byte aligned). An ldmatrix's row reads are counted as its phases instead.
struct Access {
  const void* pc;
  uintptr_t address;
  uint32_t bytes;
};

struct Fiber {
  ucontext_t context;
  std::vector<Access> shared_log, global_log;  // since its warp last synchronised
  bool in_ldmatrix;
  std::vector<AsyncCopy> copies;  // issued, not yet landed
  long groups;                    // groups committed so far
  dim3 index;
  int linear;
  State state;
  const char* exchange;  // what the pending warp exchange is (all lanes must agree)
  size_t exchange_bytes;
  unsigned exchanges;  // warp exchanges completed: its parity picks the slot buffer
};

// The order a block's ready threads run in each round, and its warps are released in: ascending,
// descending, or a fresh permutation every time from a seeded generator (splitmix64), so that each
// round interleaves the threads, and picks the warp that runs ahead, differently.
struct Order {
  int kind;  // 0 ascending, 1 descending, 2 shuffled
  uint64_t state;
  std::vector<int> threads, warps;

  uint64_t next() {
    uint64_t z = (state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
  }
  // `v` = 0..n-1 in this order.
  const std::vector<int>& arrange(std::vector<int>& v, int n) {
    v.resize(n);
    for (int i = 0; i < n; ++i) v[i] = kind == 1 ? n - 1 - i : i;
    if (kind == 2)
      for (int i = n - 1; i > 0; --i) std::swap(v[i], v[next() % (uint64_t)(i + 1)]);
    return v;
  }
};

// Memory the race tracker watches: a buffer of the launch's OS thread, the dynamic shared memory, or
// the static (__shared__) one, each with its shadow cells.
struct Region {
  uintptr_t lo, hi;
  Cell* cells;
  const char* name;
  bool shared;  // per block: accesses of earlier blocks are not this block's business
};

struct Launch {
  dim3 grid, block, block_index;
  Order order;
  int threads;
  unsigned char* shared;
  size_t shared_bytes;
  unsigned char* stacks;
  size_t stacks_bytes;
  std::vector<Fiber> fibers;
  std::vector<unsigned char> slots;  // [warp][parity][lane][SLOT_BYTES]
  ucontext_t scheduler;
  int current;
  bool in_fiber;
  bool failed;
  void (*kernel)(void*);
  void* context;
  bool track_races;
  std::vector<Region> regions;
  uint32_t launch_epoch, block_epoch, epoch;  // the first of the launch, of the current block; now
  uint32_t block_linear;
  sigjmp_buf fault;
  char error[1024];
};

thread_local Launch* active = nullptr;

Fiber& me() { return active->fibers[active->current]; }

void yield(State state) {
  Fiber& f = me();
  f.state = state;
  swapcontext(&f.context, &active->scheduler);
}

void fiber_main() {
  active->kernel(active->context);
  if (!me().copies.empty()) fail("a thread exited with cp.async copies it never waited for (cp.async.wait_group)");
  me().state = EXITED;  // uc_link returns to the scheduler
}

// Ends the launch from inside a fiber, with the reason already in active->error.
[[noreturn]] void abandon_fiber() {
  active->failed = true;
  swapcontext(&me().context, &active->scheduler);
  abort();  // a failed launch never resumes its fibers
}

// A thread's number in the launch: block index · threads per block + thread index.
uint32_t global_thread(const Launch& l) { return l.block_linear * (uint32_t)l.threads + (uint32_t)l.current; }

void describe_global_thread(const Launch& l, uint32_t id, char* out, size_t n) {
  const uint32_t b = id / (uint32_t)l.threads, t = id % (uint32_t)l.threads;
  snprintf(out, n, "block (%u, %u, %u) thread (%u, %u, %u)", b % l.grid.x, b / l.grid.x % l.grid.y, b / (l.grid.x * l.grid.y),
           t % l.block.x, t / l.block.x % l.block.y, t / (l.block.x * l.block.y));
}

void describe_thread(char* out, size_t n) { describe_global_thread(*active, global_thread(*active), out, n); }

// ---- race tracking --------------------------------------------------------------------------------
// What compute-sanitizer's racecheck reports, for shared and global memory alike: two accesses to a
// byte by different threads, at least one of them a write, that nothing orders. Inside a block only
// __syncthreads orders accesses (warp collectives do not: a shuffle is no memory fence); the blocks of
// a launch are never ordered. The kernels are compiled with -fsanitize=thread, so the compiler calls
// __tsan_read*/__tsan_write* (defined here, not libtsan's) before each access that may touch memory
// other threads see; accesses to a thread's own stack are dismissed at once.
// Every block start and every barrier release opens a new epoch (one process-wide counter): an access
// in the current epoch is unordered with this one; an access in this launch before this block's
// first epoch was made by another block, unordered too; anything else is ordered or stale. A read of
// shared memory no thread of the block has written yet fails the launch too.
std::atomic<uint32_t> epochs{1};
uint32_t new_epoch() { return epochs.fetch_add(1, std::memory_order_relaxed); }

// This OS thread's static TLS block, where `__shared__` (static thread_local here) arrays live, with
// its shadow: the block of the module that holds `active`, which the kernels are linked into.
struct StaticShared {
  uintptr_t lo = 0, hi = 0;
  std::vector<Cell> cells;
};
thread_local StaticShared static_shared;

int find_static_tls(struct dl_phdr_info* info, size_t, void* out) {
  for (int i = 0; i < info->dlpi_phnum; ++i) {
    const ElfW(Phdr)& ph = info->dlpi_phdr[i];
    const uintptr_t lo = (uintptr_t)info->dlpi_tls_data, hi = lo + ph.p_memsz, mine = (uintptr_t)&active;
    if (ph.p_type == PT_TLS && lo != 0 && mine >= lo && mine < hi) {
      *(StaticShared*)out = StaticShared{lo, hi, {}};
      return 1;
    }
  }
  return 0;
}

// The regions a launch on this OS thread tracks; false if its static shared memory cannot be found.
bool collect_regions(Launch& l) {
  if (static_shared.hi == 0) {
    dl_iterate_phdr(find_static_tls, &static_shared);
    if (static_shared.hi == 0) return false;
    static_shared.cells.resize(static_shared.hi - static_shared.lo);
  }
  l.regions.clear();
  l.regions.push_back(Region{(uintptr_t)l.shared, (uintptr_t)l.shared + l.shared_bytes, nullptr, "dynamic shared memory", true});
  l.regions.push_back(Region{static_shared.lo, static_shared.hi, static_shared.cells.data(), "static __shared__ memory", true});
  std::lock_guard<std::mutex> hold(registry_lock);
  for (const auto& [user, a] : registry) {
    if (a.owner != std::this_thread::get_id()) continue;
    if (user == (uintptr_t)l.shared) {
      l.regions[0].cells = a.cells;
    } else {
      l.regions.push_back(Region{user, user + a.bytes, a.cells, a.name, false});
    }
  }
  return true;
}

// `other` (a thread, or OTHER_READERS / EARLIER_BLOCK) accessed byte `a` in `other_epoch`, writing
// if `they_wrote`; the calling thread's access (`write`) conflicts with it.
[[noreturn]] void race(const Launch& l, const Region& r, uintptr_t a, bool write, bool they_wrote, uint32_t other,
                       uint32_t other_epoch, const void* pc) {
  const char* kind = they_wrote ? (write ? "write-after-write" : "read-after-write") : "write-after-read";
  char mine[128], theirs[160];
  describe_thread(mine, sizeof mine);
  if (other == OTHER_READERS) {
    snprintf(theirs, sizeof theirs, "other threads of the block");
  } else if (other == EARLIER_BLOCK) {
    snprintf(theirs, sizeof theirs, "a thread of another block");
  } else {
    describe_global_thread(l, other, theirs, sizeof theirs);
  }
  snprintf(active->error, sizeof active->error,
           "race (%s hazard) on byte %zu of %s: %s %s it, %s %s it %s (pc %p; addr2line -fe <test binary> it)", kind,
           (size_t)(a - r.lo), r.name, mine, write ? "writes" : "reads", theirs,
           they_wrote ? "wrote" : "read",
           other_epoch < l.block_epoch ? "in the same launch (blocks are never ordered)" : "with no __syncthreads between", pc);
  abandon_fiber();
}

// Shared memory starts undefined in every block (the emulator fills it with NaN): a read of a byte
// no thread of the block has written is a defect even where the value ends up masked.
[[noreturn]] void uninitialised(const Launch& l, const Region& r, uintptr_t a, const void* pc) {
  char mine[128];
  describe_thread(mine, sizeof mine);
  snprintf(active->error, sizeof active->error,
           "read of uninitialised shared memory: %s reads byte %zu of %s, which no thread of its block has written (pc %p; "
           "addr2line -fe <test binary> it)",
           mine, (size_t)(a - r.lo), r.name, pc);
  abandon_fiber();
}

void track(const void* p, size_t n, bool write, const void* pc, bool request = true) {
  Launch* l = active;
  if (l == nullptr || !l->track_races || !l->in_fiber) return;
  const uintptr_t a = (uintptr_t)p;
  if (a - (uintptr_t)l->stacks < l->stacks_bytes) return;
  const Region* r = nullptr;
  for (const Region& candidate : l->regions) {
    if (a >= candidate.lo && a < candidate.hi) {
      r = &candidate;
      break;
    }
  }
  if (r == nullptr) return;  // the runtime's own memory (threadIdx, the arguments): never written by a kernel
  if (request && !me().in_ldmatrix) {
    if (r->shared)
      me().shared_log.push_back(Access{pc, a, (uint32_t)n});
    else
      me().global_log.push_back(Access{pc, ((uintptr_t)(r - l->regions.data()) + 1) << 40 | (a - r->lo), (uint32_t)n});
  }
  const uint32_t me = global_thread(*l), e = l->epoch, scope = r->shared ? l->block_epoch : l->launch_epoch;
  const auto unordered = [&](uint32_t epoch) { return epoch == e || epoch < l->block_epoch; };
  for (uintptr_t byte = a; byte < std::min<uintptr_t>(a + n, r->hi); ++byte) {
    Cell& c = r->cells[byte - r->lo];
    if (c.write_epoch >= scope && c.writer != me && unordered(c.write_epoch))
      race(*l, *r, byte, write, true, c.writer, c.write_epoch, pc);
    const bool read_now = c.read_epoch >= scope;
    const uint32_t reader = c.reader & THREAD_MASK;
    const bool earlier_block = read_now && ((c.reader & EARLIER_BLOCK) || c.read_epoch < l->block_epoch);
    const bool others = read_now && c.read_epoch == e && ((c.reader & OTHER_READERS) || reader != me);
    if (!write && r->shared && c.write_epoch < scope) uninitialised(*l, *r, byte, pc);
    if (write) {
      if (earlier_block) race(*l, *r, byte, true, false, EARLIER_BLOCK, 0, pc);
      if (others) race(*l, *r, byte, true, false, reader != me ? reader : OTHER_READERS, e, pc);
      c.writer = me;
      c.write_epoch = e;
    } else {
      c.reader = me | (earlier_block ? EARLIER_BLOCK : 0) | (others ? OTHER_READERS : 0);
      c.read_epoch = e;
    }
  }
}

// ---- faults inside a kernel ---------------------------------------------------------------------
struct sigaction previous[32];
const int FAULTS[] = {SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGTRAP};

void describe_address(uintptr_t address, char* out, size_t n) {
  out[0] = 0;
  if (address >= (uintptr_t)active->stacks && address < (uintptr_t)active->stacks + active->stacks_bytes) {
    snprintf(out, n, ": the guard page of a thread's %zu-byte stack (stack overflow)", STACK_BYTES);
    return;
  }
  if (!registry_lock.try_lock()) return;
  for (const auto& [user, a] : registry) {
    const uintptr_t end = user + a.bytes;
    if (address >= end && address < (uintptr_t)a.map + a.map_bytes) {
      snprintf(out, n, ": %zu bytes past the end of %s (%zu bytes)", (size_t)(address - end), a.name, a.bytes);
      break;
    }
    if (address >= (uintptr_t)a.map && address < user) {
      snprintf(out, n, ": %zu bytes before the start of %s", (size_t)(user - address), a.name);
      break;
    }
  }
  registry_lock.unlock();
}

void on_fault(int sig, siginfo_t* info, void* uc) {
  Launch* l = active;
  if (l == nullptr || !l->in_fiber) {  // not ours: hand it to whoever handled it before
    sigaction(sig, &previous[sig], nullptr);
    return;
  }
  char thread[128], where[256];
  describe_thread(thread, sizeof thread);
  uintptr_t pc = 0;
#if defined(__x86_64__)
  pc = (uintptr_t)((ucontext_t*)uc)->uc_mcontext.gregs[REG_RIP];
#endif
  if (sig == SIGSEGV || sig == SIGBUS) {
    describe_address((uintptr_t)info->si_addr, where, sizeof where);
    snprintf(l->error, sizeof l->error, "invalid memory access at %p in %s%s (pc %#lx)", info->si_addr, thread, where,
             (unsigned long)pc);
  } else if (sig == SIGILL || sig == SIGTRAP) {
    snprintf(l->error, sizeof l->error,
             "trapped undefined behaviour in %s: an array index out of bounds, a misaligned access or an integer "
             "overflow (pc %#lx; addr2line -fe <test binary> it)",
             thread, (unsigned long)pc);
  } else {
    snprintf(l->error, sizeof l->error, "arithmetic fault (integer division by zero?) in %s (pc %#lx)", thread, (unsigned long)pc);
  }
  l->failed = true;
  siglongjmp(l->fault, 1);
}

void install_fault_handler() {
  static std::once_flag once;
  std::call_once(once, [] {
    struct sigaction action {};
    action.sa_sigaction = on_fault;
    action.sa_flags = SA_SIGINFO | SA_ONSTACK | SA_NODEFER;
    sigemptyset(&action.sa_mask);
    for (int sig : FAULTS) sigaction(sig, &action, &previous[sig]);
  });
  // the handler must not run on the stack that may have overflowed
  stack_t current;
  if (sigaltstack(nullptr, &current) == 0 && (current.ss_flags & SS_DISABLE)) {
    static thread_local std::vector<unsigned char> alternate(64 * 1024);
    stack_t s{};
    s.ss_sp = alternate.data();
    s.ss_size = alternate.size();
    sigaltstack(&s, nullptr);
  }
}

// A warp's memory requests, rebuilt: its lanes run one after another here, so each logs its
// accesses until the warp next synchronises, and the k-th access each lane made from one place in
// the kernel forms one request. That matches the hardware where the lanes run the same path; lanes
// that diverge around a loop can be grouped with another iteration's accesses.
struct Request {
  uint32_t bytes = 0, lanes = 0;
  uintptr_t address[32];
};

template <typename Cost>
void for_each_request(Fiber* lanes, std::vector<Access> Fiber::*log, Cost cost) {
  // Usually every lane took the same path: request k is then each lane's k-th access.
  const std::vector<Access>& lane0 = lanes[0].*log;
  bool same_path = true;
  for (int lane = 1; lane < 32 && same_path; ++lane) {
    const std::vector<Access>& mine = lanes[lane].*log;
    same_path = mine.size() == lane0.size();
    for (size_t k = 0; k < mine.size() && same_path; ++k) same_path = mine[k].pc == lane0[k].pc;
  }
  if (same_path) {
    Request r;
    r.lanes = 0xffffffffu;
    for (size_t k = 0; k < lane0.size(); ++k) {
      r.bytes = 0;
      for (int lane = 0; lane < 32; ++lane) {
        const Access& a = (lanes[lane].*log)[k];
        r.bytes = std::max(r.bytes, a.bytes);
        r.address[lane] = a.address;
      }
      cost(r);
    }
  } else {
    std::map<std::pair<const void*, uint32_t>, Request> requests;
    for (int lane = 0; lane < 32; ++lane) {
      std::unordered_map<const void*, uint32_t> occurrences;
      for (const Access& a : lanes[lane].*log) {
        Request& r = requests[{a.pc, occurrences[a.pc]++}];
        r.bytes = std::max(r.bytes, a.bytes);
        r.lanes |= 1u << lane;
        r.address[lane] = a.address;
      }
    }
    for (const auto& entry : requests) cost(entry.second);
  }
  for (int lane = 0; lane < 32; ++lane) (lanes[lane].*log).clear();
}

// Shared memory has 32 banks of 4-byte words and serves a warp's request in phases: all 32 lanes
// at once for accesses of up to 4 bytes, 16 lanes at a time for 8-byte ones, 8 for 16-byte ones.
// Within a phase, distinct words of one bank are served one per wavefront (lanes reading the same
// word share it).
thread_local uint64_t shared_requests = 0, shared_extra_wavefronts = 0;

// The wavefronts one phase needs: the most distinct 4-byte words its accesses (`count` of `bytes`
// each, from `starts`) touch in one bank; lanes touching the same word share it.
int phase_wavefronts(const uintptr_t* starts, int count, uint32_t bytes) {
  thread_local std::vector<uintptr_t> words;
  words.clear();
  for (int i = 0; i < count; ++i)
    for (uintptr_t w = starts[i] / 4; w <= (starts[i] + bytes - 1) / 4; ++w) words.push_back(w);
  std::sort(words.begin(), words.end());
  words.erase(std::unique(words.begin(), words.end()), words.end());
  int in_bank[32] = {0};
  for (uintptr_t w : words) ++in_bank[w % 32];
  return *std::max_element(in_bank, in_bank + 32);
}

void count_bank_conflicts(const Request& r) {
  const int per_phase = r.bytes <= 4 ? 32 : r.bytes <= 8 ? 16 : 8;
  ++shared_requests;
  for (int first = 0; first < 32; first += per_phase) {
    uintptr_t starts[32];
    int count = 0;
    for (int lane = first; lane < first + per_phase; ++lane)
      if (r.lanes & (1u << lane)) starts[count++] = r.address[lane];
    if (count > 0) shared_extra_wavefronts += phase_wavefronts(starts, count, r.bytes) - 1;
  }
}

// Global memory moves 32-byte sectors: a request costs the distinct sectors its lanes touch; the
// fewest it could cost is its distinct bytes over 32, rounded up (lanes reading the same bytes
// share them).
thread_local uint64_t global_requests = 0, global_sectors = 0, global_ideal_sectors = 0;

void count_sectors(const Request& r) {
  thread_local std::vector<std::pair<uintptr_t, uintptr_t>> spans;
  spans.clear();
  for (int lane = 0; lane < 32; ++lane)
    if (r.lanes & (1u << lane)) spans.push_back({r.address[lane], r.address[lane] + r.bytes});
  std::sort(spans.begin(), spans.end());
  uintptr_t bytes = 0, sectors = 0, covered = 0, last_sector = ~(uintptr_t)0;
  for (const auto& [lo, hi] : spans) {
    const uintptr_t from = std::max(lo, covered);
    if (from >= hi) continue;
    bytes += hi - from;
    for (uintptr_t sector = from / 32; sector <= (hi - 1) / 32; ++sector)
      if (sector != last_sector) ++sectors, last_sector = sector;
    covered = hi;
  }
  ++global_requests;
  global_sectors += sectors;
  global_ideal_sectors += (bytes + 31) / 32;
}

void count_warp_requests(Fiber* lanes) {
  for_each_request(lanes, &Fiber::shared_log, count_bank_conflicts);
  for_each_request(lanes, &Fiber::global_log, count_sectors);
}

// Releases what can be released; false when nothing can (a deadlock), with the reason in l.error.
// One warp collective at a time, of the first warp in schedule order that has all its lanes there:
// that warp runs ahead of the others up to the next block barrier (or its exit), as a warp the
// hardware schedules first may, so a warp that overwrites shared memory others still read between
// two barriers shows in the results.
bool release(Launch& l) {
  bool released = false;
  const int warps = l.threads / 32;
  const std::vector<int>& order = l.order.arrange(l.order.warps, warps);
  for (int k = 0; k < warps && !released; ++k) {
    const int w = order[k];
    Fiber* lanes = &l.fibers[32 * w];
    bool all = true;
    for (int i = 0; i < 32 && all; ++i) all = lanes[i].state == AT_WARP_EXCHANGE;
    if (!all) continue;
    for (int i = 1; i < 32; ++i) {
      if (lanes[i].exchange != lanes[0].exchange || lanes[i].exchange_bytes != lanes[0].exchange_bytes) {
        snprintf(l.error, sizeof l.error, "warp %d of block (%u, %u, %u): lane 0 is in %s, lane %d in %s", w, l.block_index.x,
                 l.block_index.y, l.block_index.z, lanes[0].exchange, i, lanes[i].exchange);
        return false;
      }
    }
    count_warp_requests(lanes);
    for (int i = 0; i < 32; ++i) lanes[i].state = READY;
    released = true;
  }
  if (released) return true;
  int counts[4] = {0, 0, 0, 0};
  const char* exchange = "";
  for (const Fiber& f : l.fibers) {
    ++counts[f.state];
    if (f.state == AT_WARP_EXCHANGE) exchange = f.exchange;
  }
  if (counts[AT_BLOCK_BARRIER] > 0 && counts[AT_WARP_EXCHANGE] == 0 && counts[EXITED] == 0) {
    for (int w = 0; w < warps; ++w) count_warp_requests(&l.fibers[32 * w]);
    for (Fiber& f : l.fibers) f.state = READY;
    l.epoch = new_epoch();
    return true;
  }
  snprintf(l.error, sizeof l.error,
           "deadlock in block (%u, %u, %u) of %d threads: %d at __syncthreads, %d in a warp collective (%s) its whole "
           "warp does not reach, %d exited (a barrier or collective not reached by every thread)",
           l.block_index.x, l.block_index.y, l.block_index.z, l.threads, counts[AT_BLOCK_BARRIER], counts[AT_WARP_EXCHANGE],
           exchange, counts[EXITED]);
  return false;
}

// Separate (getcontext returns twice, like setjmp): a fresh fiber for thread i, stack below its guard page.
__attribute__((noinline)) void start_fiber(Launch& l, int i) {
  Fiber& f = l.fibers[i];
  f.state = READY;
  f.shared_log.clear();
  f.global_log.clear();
  f.in_ldmatrix = false;
  f.exchanges = 0;
  f.copies.clear();
  f.groups = 0;
  getcontext(&f.context);
  f.context.uc_stack.ss_sp = l.stacks + (size_t)i * (STACK_BYTES + page()) + page();
  f.context.uc_stack.ss_size = STACK_BYTES;
  f.context.uc_link = &l.scheduler;
  makecontext(&f.context, fiber_main, 0);
}

// noinline: keeps its locals out of simt_launch's frame, which siglongjmp returns to.
__attribute__((noinline)) bool run_block(Launch& l) {
  memset(l.shared, 0xff, l.shared_bytes);  // unwritten shared memory reads as NaN
  l.block_epoch = l.epoch = new_epoch();
  l.block_linear = l.block_index.x + l.grid.x * (l.block_index.y + l.grid.y * l.block_index.z);
  for (int i = 0; i < l.threads; ++i) start_fiber(l, i);
  for (;;) {
    bool any_live = false;
    const std::vector<int>& order = l.order.arrange(l.order.threads, l.threads);
    for (int k = 0; k < l.threads; ++k) {
      const int i = order[k];
      if (l.fibers[i].state != READY) continue;
      l.current = i;
      l.in_fiber = true;
      swapcontext(&l.scheduler, &l.fibers[i].context);
      l.in_fiber = false;
      if (l.failed) return false;
    }
    for (const Fiber& f : l.fibers) any_live |= f.state != EXITED;
    if (!any_live) {
      for (int w = 0; w < l.threads / 32; ++w) count_warp_requests(&l.fibers[32 * w]);
      return true;
    }
    if (!release(l)) return false;
  }
}

}  // namespace

const dim3& thread_idx() { return me().index; }
const dim3& block_idx() { return active->block_index; }
const dim3& block_dim() { return active->block; }
const dim3& grid_dim() { return active->grid; }
int lane() { return me().linear & 31; }
void sync_block() { yield(AT_BLOCK_BARRIER); }
void ldmatrix_reads(bool inside) { me().in_ldmatrix = inside; }
unsigned char* dynamic_shared() { return active->shared; }
bool in_dynamic_shared(const void* p, size_t bytes) {
  const unsigned char* c = (const unsigned char*)p;
  return c >= active->shared && c + bytes <= active->shared + active->shared_bytes;
}

void fail(const char* what) {
  char thread[128];
  describe_thread(thread, sizeof thread);
  snprintf(active->error, sizeof active->error, "%s (%s)", what, thread);
  abandon_fiber();
}

void cp_async_16(void* dst, const void* src, int src_bytes) {
  if (src_bytes != 0 && src_bytes != 16) fail("cp.async: a source size other than 0 or 16 bytes");
  if (((uintptr_t)dst & 15) != 0 || ((uintptr_t)src & 15) != 0) fail("cp.async: an address not 16-byte aligned");
  if (!in_dynamic_shared(dst, 16)) fail("cp.async: a destination outside the block's dynamic shared memory");
  AsyncCopy copy{(unsigned char*)dst, {}, -1};
  if (src_bytes == 16) {
    track(src, 16, false, __builtin_return_address(0));
    memcpy(copy.bytes, src, 16);  // a source past its buffer faults here, in the issuing thread
  }
  track(dst, 16, true, __builtin_return_address(0));  // in flight from now on: any byte, any time until the wait
  memset(dst, 0xff, 16);  // not landed yet: NaN until the wait
  me().copies.push_back(copy);
}

void cp_async_commit() {
  Fiber& f = me();
  for (AsyncCopy& c : f.copies)
    if (c.group < 0) c.group = f.groups;
  ++f.groups;
}

void cp_async_wait(int pending_groups) {
  Fiber& f = me();
  const long newest_to_land = f.groups - 1 - pending_groups;  // groups up to this one must have landed
  std::vector<AsyncCopy> still;
  for (const AsyncCopy& c : f.copies) {
    if (c.group >= 0 && c.group <= newest_to_land) {
      track(c.dst, 16, true, __builtin_return_address(0), /*request=*/false);  // the issue was the request
      memcpy(c.dst, c.bytes, 16);
    } else {
      still.push_back(c);
    }
  }
  f.copies.swap(still);
}

// An ldmatrix phase reads 8 rows of 16 bytes (4 words each): one wavefront when the 32 words fall
// in 32 distinct banks (see count_bank_conflicts).
thread_local uint64_t ldmatrix_phases = 0, ldmatrix_extra_wavefronts = 0;

void count_ldmatrix_wavefronts(const void* const* rows) {
  for (int j = 0; j < 4; ++j) {
    ++ldmatrix_phases;
    ldmatrix_extra_wavefronts += phase_wavefronts(reinterpret_cast<const uintptr_t*>(rows + 8 * j), 8, 16) - 1;
  }
}

void warp_exchange(unsigned mask, const void* mine, size_t bytes, void* all, const char* what) {
  if (mask != 0xffffffffu) fail("a warp collective with a partial lane mask (the kernels use full warps only)");
  if (active->threads % 32 != 0) fail("a warp collective in a block whose size is not a multiple of 32");
  if (bytes > SLOT_BYTES) fail("a warp exchange larger than the emulator's slot");
  Fiber& f = me();
  const int warp = f.linear / 32, lane = f.linear % 32, parity = f.exchanges & 1;
  // two slot buffers per warp: a lane can be one exchange ahead of the slowest reader, never two
  unsigned char* buffer = &active->slots[((size_t)(2 * warp + parity) * 32) * SLOT_BYTES];
  memcpy(buffer + lane * SLOT_BYTES, mine, bytes);
  f.exchange = what;
  f.exchange_bytes = bytes;
  yield(AT_WARP_EXCHANGE);
  for (int i = 0; i < 32; ++i) memcpy((unsigned char*)all + i * bytes, buffer + i * SLOT_BYTES, bytes);
  ++me().exchanges;
}

}  // namespace simt

extern "C" {

// The -fsanitize=thread instrumentation ABI, as the kernels' compiler calls it (see race tracking).
// No __tsan_atomic*: a kernel that uses atomics fails to link here until they are modelled.
#define SIMT_ACCESS_HOOKS(n)                                                                                          \
  void __tsan_read##n(void* p) { simt::track(p, n, false, __builtin_return_address(0)); }                            \
  void __tsan_write##n(void* p) { simt::track(p, n, true, __builtin_return_address(0)); }                            \
  void __tsan_unaligned_read##n(void* p) { simt::track(p, n, false, __builtin_return_address(0)); }                  \
  void __tsan_unaligned_write##n(void* p) { simt::track(p, n, true, __builtin_return_address(0)); }
SIMT_ACCESS_HOOKS(1)
SIMT_ACCESS_HOOKS(2)
SIMT_ACCESS_HOOKS(4)
SIMT_ACCESS_HOOKS(8)
SIMT_ACCESS_HOOKS(16)
#undef SIMT_ACCESS_HOOKS
void __tsan_read_range(void* p, size_t n) { simt::track(p, n, false, __builtin_return_address(0)); }
void __tsan_write_range(void* p, size_t n) { simt::track(p, n, true, __builtin_return_address(0)); }
void __tsan_func_entry(void*) {}
void __tsan_func_exit() {}
void __tsan_init() {}

void* simt_alloc(size_t bytes, const char* name) { return simt::guarded_alloc(bytes, name); }

void simt_free(void* p) { simt::guarded_free(p); }

// Since the last call on this OS thread (then reset): what its launches' warps asked of memory.
struct SimtMemoryCounts {
  uint64_t ldmatrix_phases, ldmatrix_extra_wavefronts;
  uint64_t shared_requests, shared_extra_wavefronts;
  uint64_t global_requests, global_sectors, global_ideal_sectors;
};

void simt_take_memory_counts(SimtMemoryCounts* out) {
  using namespace simt;
  *out = SimtMemoryCounts{ldmatrix_phases, ldmatrix_extra_wavefronts, shared_requests, shared_extra_wavefronts,
                          global_requests, global_sectors, global_ideal_sectors};
  ldmatrix_phases = ldmatrix_extra_wavefronts = shared_requests = shared_extra_wavefronts = 0;
  global_requests = global_sectors = global_ideal_sectors = 0;
}

// Runs `kernel(context)` as every thread of a grid; 0 on success, else -1 with the reason in `error`.
// `order` (0 ascending, 1 descending, 2 shuffled from `seed`) is the order the ready threads of each
// round run in (see Order): a kernel whose result depends on it races on memory without a barrier
// between writer and reader. `track_races` (nonzero) fails the launch at the first race the tracker
// sees, whatever the order.
int simt_launch(const unsigned grid[3], const unsigned block[3], size_t shared_bytes, int order, uint64_t seed,
                int track_races, void (*kernel)(void*), void* context, char* error, size_t error_len) {
  using namespace simt;
  auto bail = [&](const char* what) {
    snprintf(error, error_len, "%s", what);
    return -1;
  };
  if (active != nullptr) return bail("a kernel launched another kernel (not supported)");
  const long threads = (long)block[0] * block[1] * block[2];
  if (threads < 1 || threads > 1024) return bail("block size outside 1..1024 threads");
  if (grid[0] < 1 || grid[1] < 1 || grid[2] < 1 || grid[1] > 65535 || grid[2] > 65535)
    return bail("grid dimension outside the CUDA limits (x >= 1, 1 <= y, z <= 65535)");
  if (shared_bytes > 227 * 1024) return bail("dynamic shared memory above sm_90's 227 KB per block");
  if (order < 0 || order > 2) return bail("thread order outside 0 (ascending), 1 (descending), 2 (shuffled)");
  if (track_races && (double)grid[0] * grid[1] * grid[2] * threads > THREAD_MASK)
    return bail("a launch of more than 2^30 threads, beyond what the race tracker numbers");
  install_fault_handler();

  Launch l{};
  l.order.kind = order;
  l.order.state = seed;
  l.grid = dim3{grid[0], grid[1], grid[2]};
  l.block = dim3{block[0], block[1], block[2]};
  l.threads = (int)threads;
  l.shared_bytes = shared_bytes;
  l.shared = guarded_alloc(shared_bytes, "the dynamic shared memory the launch asked for");
  l.stacks_bytes = (size_t)threads * (STACK_BYTES + page());
  l.stacks = (unsigned char*)mmap(nullptr, l.stacks_bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (l.shared == nullptr || l.stacks == MAP_FAILED) return bail("out of host memory for the launch");
  for (long i = 0; i < threads; ++i) mprotect(l.stacks + i * (STACK_BYTES + page()), page(), PROT_NONE);
  l.fibers.resize(threads);
  for (long i = 0; i < threads; ++i) {
    l.fibers[i].linear = (int)i;
    l.fibers[i].index = dim3{(unsigned)(i % block[0]), (unsigned)(i / block[0] % block[1]), (unsigned)(i / (block[0] * block[1]))};
  }
  l.slots.resize((size_t)(threads + 31) / 32 * 2 * 32 * SLOT_BYTES);
  l.kernel = kernel;
  l.context = context;
  l.track_races = track_races != 0;
  if (l.track_races && !collect_regions(l)) {
    munmap(l.stacks, l.stacks_bytes);
    guarded_free(l.shared);
    return bail("the race tracker cannot find this thread's static shared memory (its TLS block)");
  }
  l.launch_epoch = new_epoch();
  active = &l;
  bool ok = true;
  if (sigsetjmp(l.fault, 1) == 0) {
    for (unsigned z = 0; z < grid[2] && ok; ++z)
      for (unsigned y = 0; y < grid[1] && ok; ++y)
        for (unsigned x = 0; x < grid[0] && ok; ++x) {
          l.block_index = dim3{x, y, z};
          ok = run_block(l);
        }
  } else {
    ok = false;
  }
  active = nullptr;
  munmap(l.stacks, l.stacks_bytes);
  guarded_free(l.shared);
  if (!ok) return bail(l.error);
  return 0;
}
}
