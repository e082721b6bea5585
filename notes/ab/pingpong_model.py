"""A model of the one-partition kernel's synchronisation, run under random interleavings (CPU only): every schedule
must finish, with every barrier balanced. What it models: the ring of K/V slots with ready and empty mbarriers
(phases, parities, 256 arrivals to empty a slot), Q's buffer (the producer's copy, every consumer thread's release),
the tile's meeting barrier, and the ping-pong turns of `kernel-exp-one-consumer-ring-ptx-pingpong` (named barriers of
256 threads: a warp group's bar.sync on its own, the other's bar.arrive), and the tail key joined to a tile's last
masked step (`kernel-exp-one-consumer-ring-ptx-joint`: both K slots held, then both V). Agents: the producer and
the two warp groups (each one agent: its 128 threads act together). Plans: random tiles of 0-6 wide steps, 0-2
masked steps and a tail or none.

    python notes/ab/pingpong_model.py [SEED]   # 3000 random plans, each with and without the turns and the join
"""
import random
import sys

STAGES = 2


class MBar:
    def __init__(self, count):
        self.count, self.pending, self.phase = count, count, 0

    def arrive(self, n=1):
        self.pending -= n
        assert self.pending >= 0
        if self.pending == 0:
            self.phase ^= 1
            self.pending = self.count

    def done(self, parity):  # try_wait.parity: the phase with that parity has completed
        return self.phase != parity


class Named:  # a named barrier of 256 threads: bar.sync (waits) and bar.arrive (does not)
    def __init__(self):
        self.acc, self.gen = 0, 0

    def add(self, n):
        self.acc += n
        assert self.acc <= 256, "a named barrier over-arrived"
        if self.acc == 256:
            self.acc = 0
            self.gen += 1


def producer(st, plan):
    it = 0
    for r, (wide, masked, tail) in enumerate(plan):
        yield lambda: st["q_empty"].done(((r & 1) ^ 1))
        st["q_full"].arrive()
        for _ in range(wide + masked + tail):
            s, ph = it % STAGES, (it // STAGES) & 1
            yield lambda s=s, ph=ph: st["empty_k"][s].done(ph ^ 1)
            st["ready_k"][s].arrive()
            yield lambda s=s, ph=ph: st["empty_v"][s].done(ph ^ 1)
            st["ready_v"][s].arrive()
            it += 1
    yield lambda: st["q_empty"].done(((len(plan) & 1) ^ 1))
    st["q_full"].arrive()  # "no tile left"


def warp_group(st, plan, w, pingpong, joint):
    it = 0

    def step(it):  # a step that waits for each product: K, then V, each released after its wait
        s, ph = it % STAGES, (it // STAGES) & 1
        yield lambda: st["ready_k"][s].done(ph)
        st["empty_k"][s].arrive(128)
        yield lambda: st["ready_v"][s].done(ph)
        st["empty_v"][s].arrive(128)

    def joined(it):  # the last masked block and the tail key: both K held, then both V
        s, ph, s2, ph2 = it % STAGES, (it // STAGES) & 1, (it + 1) % STAGES, ((it + 1) // STAGES) & 1
        yield lambda: st["ready_k"][s].done(ph)
        yield lambda: st["ready_k"][s2].done(ph2)
        st["empty_k"][s].arrive(128)
        st["empty_k"][s2].arrive(128)
        yield lambda: st["ready_v"][s].done(ph)
        yield lambda: st["ready_v"][s2].done(ph2)
        st["empty_v"][s].arrive(128)
        st["empty_v"][s2].arrive(128)

    def turn_wait():
        b = st["turn"][w]
        g = b.gen
        b.add(128)
        yield lambda: b.gen != g

    def turn_pass(last):
        if not (last and w == 1):
            st["turn"][1 - w].add(128)

    for r, (n, masked, tail) in enumerate(plan):
        yield lambda r=r: st["q_full"].done(r & 1)
        st["q_empty"].arrive(128)  # Q read, released by every thread
        if n > 0:
            s = it % STAGES
            yield lambda s=s, ph=(it // STAGES) & 1: st["ready_k"][s].done(ph)
            if pingpong:
                if w == 1:
                    st["turn"][0].add(128)
                yield from turn_wait()
                turn_pass(n == 1)
            st["empty_k"][s].arrive(128)
            prev = s
            for t in range(1, n):
                cur = it + t
                s = cur % STAGES
                yield lambda s=s, ph=(cur // STAGES) & 1: st["ready_k"][s].done(ph)
                if pingpong:
                    yield from turn_wait()
                yield lambda p=prev, ph=((cur - 1) // STAGES) & 1: st["ready_v"][p].done(ph)
                if pingpong:
                    turn_pass(t == n - 1)
                st["empty_k"][s].arrive(128)
                st["empty_v"][prev].arrive(128)
                prev = s
            yield lambda p=prev, ph=((it + n - 1) // STAGES) & 1: st["ready_v"][p].done(ph)
            st["empty_v"][prev].arrive(128)
        it += n
        together = joint and tail and masked > 0
        for _ in range(masked - together):
            yield from step(it)
            it += 1
        if together:
            yield from joined(it)
            it += 2
        elif tail:
            yield from step(it)
            it += 1
        # the output: the partition's barrier (both warp groups)
        g = st["meet"].gen
        st["meet"].add(128)
        yield lambda g=g: st["meet"].gen != g
    yield lambda: st["q_full"].done(len(plan) & 1)


def run(plan, pingpong, joint, rng):
    st = {"ready_k": [MBar(1) for _ in range(STAGES)], "ready_v": [MBar(1) for _ in range(STAGES)],
          "empty_k": [MBar(256) for _ in range(STAGES)], "empty_v": [MBar(256) for _ in range(STAGES)],
          "q_full": MBar(1), "q_empty": MBar(256), "turn": [Named(), Named()], "meet": Named()}
    agents = [producer(st, plan), warp_group(st, plan, 0, pingpong, joint),
              warp_group(st, plan, 1, pingpong, joint)]
    waits = [None] * 3
    live = set(range(3))
    while live:
        ready = [i for i in live if waits[i] is None or waits[i]()]
        if not ready:
            return False, st
        i = rng.choice(ready)
        try:
            waits[i] = next(agents[i])
        except StopIteration:
            live.discard(i)
    return True, st


def main():
    rng = random.Random(int(sys.argv[1]) if len(sys.argv) > 1 else 0)
    bad = 0
    for trial in range(3000):
        plan = [(rng.randint(0, 6), rng.randint(0, 2), rng.randint(0, 1)) for _ in range(rng.randint(1, 5))]
        for pp, joint in ((False, False), (True, False), (False, True), (True, True)):
            ok, st = run(plan, pp, joint, rng)
            balanced = all(b.acc == 0 for b in st["turn"]) and st["meet"].acc == 0
            if not ok or not balanced:
                bad += 1
                print("FAIL", plan, "pingpong" if pp else "free", "joint" if joint else "", "finished" if ok
                      else "stuck", [b.acc for b in st["turn"]])
                if bad > 5:
                    return 1
    print("all schedules finished, barriers balanced" if not bad else f"{bad} failures")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
