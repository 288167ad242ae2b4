"""Phases of warm sandbox runs from a tracefs trace (bench/sandbox/phases.sh): one row per request of the client
`lat`, the median of each phase in microseconds."""
import re
import statistics
import sys

LINE = re.compile(r'\s*(.+?)-(\d+)\s+\[(\d+)\]\s+\S+\s+([\d.]+): (\S+): (.*)')
NR_READ, NR_WRITE, NR_RECVFROM, NR_SENDMSG, NR_RECVMSG, NR_EXECVE, NR_SENDMMSG, NR_EXECVEAT = 0, 1, 45, 46, 47, 59, 307, 322


def events(path):
    out = []
    for line in open(path, encoding='utf-8', errors='replace'):
        m = LINE.match(line)
        if not m:
            continue
        comm, pid, _cpu, ts, ev, rest = m.groups()
        ts = float(ts) * 1e6
        if ev in ('sys_enter', 'sys_exit'):
            nr = int(rest.split()[1])
            ret = int(rest.split('=')[-1].strip()) if ev == 'sys_exit' else None
            out.append((ts, pid, comm, ev, nr, ret))
        elif ev in ('sched_process_exec', 'sched_process_exit'):
            out.append((ts, pid, comm, ev, None, None))
    return out


def main():
    ev = events(sys.argv[1])
    phases = {k: [] for k in ('to_child', 'child_setup', 'execve', 'run', 'exit_to_result', 'result_to_client', 'total')}
    starts = [i for i, e in enumerate(ev) if e[2].startswith('lat') and e[3] == 'sys_enter' and e[4] == NR_WRITE]
    for si in starts:
        t0 = ev[si][0]
        ex = next((k for k in range(si, len(ev)) if ev[k][3] == 'sched_process_exec'), None)
        if ex is None:
            continue
        p = ev[ex][1]
        def last_before(cond):
            return max((k for k in range(si, ex) if cond(ev[k])), default=None)
        def first_after(start, cond):
            return next((k for k in range(start, len(ev)) if cond(ev[k])), None) if start is not None else None
        rcv = last_before(lambda e: e[1] == p and e[3] == 'sys_exit' and e[4] == NR_RECVMSG)
        exe = last_before(lambda e: e[1] == p and e[3] == 'sys_enter' and e[4] in (NR_EXECVE, NR_EXECVEAT))
        exe_done = first_after(ex, lambda e: e[1] == p and e[3] == 'sys_exit' and e[4] in (NR_EXECVE, NR_EXECVEAT))
        pe = first_after(ex, lambda e: e[1] == p and e[3] == 'sched_process_exit')
        # the result: a sendmsg of its own (it carries the ready count), or a sendmmsg of the queue (builds before 591f2e0)
        res = first_after(pe, lambda e: 'zygote' in e[2] and e[3] == 'sys_exit' and
                          ((e[4] == NR_SENDMSG and e[5] > 80) or (e[4] == NR_SENDMMSG and e[5] > 0)))
        # the send's start: a client woken by it may preempt the zygote and answer before the send returns
        if res is not None:
            res = max(k for k in range(pe, res + 1) if ev[k][1] == ev[res][1] and ev[k][3] == 'sys_enter')
        rd = first_after(res, lambda e: e[2].startswith('lat') and e[3] == 'sys_exit' and e[4] in (NR_READ, NR_RECVFROM)
                         and (e[5] or 0) > 0)
        if None in (rcv, exe, exe_done, pe, res, rd):
            continue
        t = lambda k: ev[k][0]
        phases['to_child'].append(t(rcv) - t0)
        phases['child_setup'].append(t(exe) - t(rcv))
        phases['execve'].append(t(exe_done) - t(exe))
        phases['run'].append(t(pe) - t(exe_done))
        phases['exit_to_result'].append(t(res) - t(pe))
        phases['result_to_client'].append(t(rd) - t(res))
        phases['total'].append(t(rd) - t0)
    if not phases['total']:
        sys.exit('phases: no complete run found in the trace')
    print(' '.join('%s=%.0f' % (k, statistics.median(v)) for k, v in phases.items()), 'n=%d' % len(phases['total']))


if __name__ == '__main__':
    main()
