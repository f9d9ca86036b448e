"""Count the primes below N on every rank of an MPI job: a checkable parallel job.

Each rank sieves its own slice of [2, N) (a segmented sieve of Eratosthenes over the base
primes up to sqrt(N)), rank 0 adds the counts and prints one line per rank (its host and
share) and the total, which must equal the known value (pi(10^8) = 5,761,455).

    srun -N 3 python3 primes.py 100000000
    clusterctl hpc run -N 3 -- python3 /usr/local/share/clusterctl/examples/primes.py 100000000
"""

from __future__ import annotations

import math
import socket
import sys
import time

KNOWN = {10**6: 78_498, 10**7: 664_579, 10**8: 5_761_455}


def base_primes(limit: int) -> list[int]:
    """The primes <= limit, by a plain sieve (limit is sqrt(N): small)."""
    sieve = bytearray([1]) * (limit + 1)
    sieve[:2] = b"\0\0"
    for p in range(2, math.isqrt(limit) + 1):
        if sieve[p]:
            sieve[p * p :: p] = bytes(len(range(p * p, limit + 1, p)))
    return [i for i, is_prime in enumerate(sieve) if is_prime]


def count_primes(lo: int, hi: int, primes: list[int]) -> int:
    """How many primes lie in [lo, hi), given every prime <= sqrt(hi)."""
    lo = max(lo, 2)
    if hi <= lo:
        return 0
    segment = bytearray([1]) * (hi - lo)
    for p in primes:
        if p * p >= hi:
            break
        first = max(p * p, (lo + p - 1) // p * p)
        if first < hi:
            segment[first - lo :: p] = bytes(len(range(first, hi, p)))
    return segment.count(1)


def share(rank: int, size: int, n: int) -> tuple[int, int]:
    """Rank's slice [lo, hi) of [0, n): as equal as integers allow, covering all of it."""
    return n * rank // size, n * (rank + 1) // size


def main() -> int:
    from mpi4py import MPI

    n = int(sys.argv[1]) if len(sys.argv) > 1 else 10**8
    comm = MPI.COMM_WORLD
    rank, size = comm.Get_rank(), comm.Get_size()
    started = time.monotonic()
    lo, hi = share(rank, size, n)
    count = count_primes(lo, hi, base_primes(math.isqrt(n)))
    mine = (rank, socket.gethostname(), lo, hi, count, time.monotonic() - started)
    everyone = comm.gather(mine, root=0)
    if rank != 0:
        return 0
    assert everyone is not None
    for r, host, r_lo, r_hi, r_count, seconds in everyone:
        print(f"rank {r} on {host}: {r_count} primes in [{r_lo}, {r_hi}) in {seconds:.2f} s")
    total = sum(row[4] for row in everyone)
    hosts = sorted({row[1] for row in everyone})
    print(f"primes below {n}: {total} ({size} ranks on {len(hosts)} nodes: {', '.join(hosts)})")
    expected = KNOWN.get(n)
    if expected is not None and total != expected:
        print(f"WRONG: the known count is {expected}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
