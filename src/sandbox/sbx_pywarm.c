#include "sandbox/sbx_pywarm.h"

#include <stdio.h>
#include <string.h>

#include "sandbox/sbx_runner.h"
#include "sandbox/sbx_wire.h"

/* The bootstrap, run as `python3 -c` in a warm child (see sbx_pywarm.h). It imports only what receiving a run
 * needs (_socket for SCM_RIGHTS, resource for the rlimits; marshal and os are loaded by start-up already) and
 * removes those from sys.modules again before the program runs, so sys.modules is what a cold start has. Steps
 * that fail report "<step>: <reason>" on the control socket and exit 121, as the C child's do. The run itself
 * is outside the boot function, so the program's frames sit directly under one bootstrap frame, which the
 * traceback of an uncaught exception skips. */
static const char bootstrap[] =
    "import sys\n"
    "def _agentd_boot():\n"
    "    import os\n"
    "    before = set(sys.modules)\n"
    "    import _socket, marshal, resource\n"
    "    magic, t_ready, t_error, t_workdir, t_run, f_memfd, msg_max, nfds_max = map(int, sys.argv[1:9])\n"
    "    bo = sys.byteorder\n"
    "    def hdr(t):\n"
    "        return magic.to_bytes(4, bo) + t.to_bytes(2, bo) + bytes(10)\n"
    "    s = _socket.socket(_socket.AF_UNIX, _socket.SOCK_SEQPACKET, 0, 3)\n"
    "    def fail(text):\n"
    "        try:\n"
    "            s.send(hdr(t_error) + text.encode('utf-8', 'replace')[:512])\n"
    "        finally:\n"
    "            os._exit(121)\n"
    "    s.send(hdr(t_ready))\n"
    "    try:\n"
    "        msg, anc, _, _ = s.recvmsg(msg_max, _socket.CMSG_SPACE(4 * nfds_max))\n"
    "    except OSError as e:\n"
    "        fail('receive: recv: %s' % e.strerror)\n"
    "    if not msg:\n"
    "        os._exit(0)\n"
    "    fds = []\n"
    "    for lvl, typ, data in anc:\n"
    "        if lvl == _socket.SOL_SOCKET and typ == _socket.SCM_RIGHTS:\n"
    "            fds += [int.from_bytes(data[i:i + 4], bo) for i in range(0, len(data) - 3, 4)]\n"
    "    if (len(msg) < 16 or int.from_bytes(msg[:4], bo) != magic or int.from_bytes(msg[4:6], bo) != t_run\n"
    "            or len(fds) < 3):\n"
    "        fail('receive: expected RUN with 3 fds')\n"
    "    try:\n"
    "        if int.from_bytes(msg[6:8], bo) & f_memfd:\n"
    "            body = os.pread(fds[3], os.fstat(fds[3]).st_size, 0)\n"
    "        else:\n"
    "            body = msg[16:]\n"
    "        code, files, env, limits, collect = marshal.loads(body)\n"
    "    except (OSError, IndexError, ValueError, EOFError, TypeError):\n"
    "        fail('receive: bad RUN')\n"
    "    del msg, anc, body\n"
    "    def put(dfd, name, data, mode):\n"
    "        shown = name.decode('utf-8', 'replace')\n"
    "        try:\n"
    "            fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC\n"
    "                         | os.O_NOCTTY, (mode & 0o777) or 0o644, dir_fd=dfd)\n"
    "        except OSError as e:\n"
    "            fail('files: create %s: %s' % (shown, e.strerror))\n"
    "        try:\n"
    "            view = memoryview(data)\n"
    "            while view:\n"
    "                view = view[os.write(fd, view):]\n"
    "        except OSError as e:\n"
    "            fail('files: write %s: %s' % (shown, e.strerror))\n"
    "        if mode & 0o777:\n"
    "            os.fchmod(fd, mode & 0o777)\n"
    "        os.close(fd)\n"
    "    try:\n"
    "        dfd = os.open('/work', os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC | os.O_NOFOLLOW)\n"
    "    except OSError as e:\n"
    "        fail('files: open /work: %s' % e.strerror)\n"
    "    put(dfd, b'main.py', code, 0o644)\n"
    "    for name, data, mode in files:\n"
    "        put(dfd, name, data, mode)\n"
    "    if collect:\n"
    "        try:\n"
    "            s.sendmsg([hdr(t_workdir)], [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS, dfd.to_bytes(4, bo))])\n"
    "        except OSError as e:\n"
    "            fail('files: send /work: %s' % e.strerror)\n"
    "    os.close(dfd)\n"
    "    del files\n"
    "    for i in range(3):\n"
    "        try:\n"
    "            os.dup2(fds[i], i)\n"
    "        except OSError as e:\n"
    "            fail('stdio: dup2 %d: %s' % (i, e.strerror))\n"
    "    for k, v in (e.split(b'=', 1) for e in env):\n"
    "        os.environb[k] = v\n"
    "    for res, soft, hard, name in limits:\n"
    "        try:\n"
    "            resource.setrlimit(res, (soft, hard))\n"
    "        except (OSError, ValueError) as e:\n"
    "            fail('rlimits: setrlimit(%s): %s' % (name, getattr(e, 'strerror', None) or e))\n"
    "    for k in [k for k in sys.modules if k not in before]:\n"
    "        del sys.modules[k]\n"
    "    m = type(sys)('__main__')\n"
    "    g = m.__dict__\n"
    "    g['__annotations__'] = {}\n"
    "    g['__builtins__'] = sys.modules['builtins']\n"
    "    g['__file__'] = '/work/main.py'\n"
    "    g['__cached__'] = None\n"
    "    g['__loader__'] = sys.modules['_frozen_importlib_external'].SourceFileLoader('__main__', '/work/main.py')\n"
    "    sys.modules['__main__'] = m\n"
    "    sys.argv[:] = ['main.py']\n"
    "    sys.orig_argv[:] = ['/usr/bin/python3', 'main.py']\n"
    "    sys.path[0] = '/work'\n"
    "    s.close()\n"
    "    os.closerange(3, 65536)\n"
    "    return code, g\n"
    "_agentd_src, _agentd_g = _agentd_boot()\n"
    "del _agentd_boot\n"
    "try:\n"
    "    _agentd_code = compile(_agentd_src, '/work/main.py', 'exec', dont_inherit=True)\n"
    "    del _agentd_src\n"
    "    exec(_agentd_code, _agentd_g)\n"
    "except SystemExit:\n"
    "    raise\n"
    "except BaseException as e:\n"
    "    e.__traceback__ = e.__traceback__.tb_next\n"
    "    sys.excepthook(type(e), e, e.__traceback__)\n"
    "    sys.exit(1)\n";

const char *const *sbx_pywarm_argv(void)
{
    static char nums[8][24];
    static const char *argv[12];
    if (argv[0] == NULL) {
        const unsigned long v[8] = {SBX_WIRE_MAGIC, SBX_MSG_READY,      SBX_MSG_ERROR,    SBX_MSG_WORKDIR,
                                    SBX_MSG_PYRUN,  SBX_MSG_F_MEMFD,    SBX_WIRE_MSG_MAX, SBX_WIRE_MAX_FDS};
        argv[0] = "/usr/bin/python3";
        argv[1] = "-c";
        argv[2] = bootstrap;
        for (int i = 0; i < 8; i++) {
            (void)snprintf(nums[i], sizeof(nums[i]), "%lu", v[i]);
            argv[3 + i] = nums[i];
        }
        argv[11] = NULL;
    }
    return argv;
}

bool sbx_pywarm_eligible(const struct sbx_spec *s)
{
    if (s->lang != SBX_LANG_PYTHON || s->argc != 0 || s->code == NULL || s->net != SBX_NET_NONE)
        return false; /* a warm interpreter is made for network "none" */
    /* What the interpreter reads while it starts (before any run exists): a run that sets it needs a cold start. */
    static const char *const prefixes[] = {"PYTHON", "LANG", "LC_", "HOME=", "TZ="};
    for (size_t i = 0; i < s->envc; i++)
        for (size_t k = 0; k < sizeof(prefixes) / sizeof(prefixes[0]); k++)
            if (strncmp(s->env[i], prefixes[k], strlen(prefixes[k])) == 0)
                return false;
    /* Input files in subdirectories (data/in.csv) are made by the C child (sbx_files_write: the directories too);
     * the bootstrap writes plain names only, so such a run takes the cold path. */
    for (size_t i = 0; i < s->nfiles; i++)
        if (strchr(s->files[i].name, '/'))
            return false;
    return true;
}

/* ---- marshal (the subset Python's marshal.loads reads: tuples, bytes, ints, booleans; little-endian) ---- */

static void m_u32(struct buf *b, uint32_t v)
{
    unsigned char c[4] = {(unsigned char)v, (unsigned char)(v >> 8), (unsigned char)(v >> 16),
                          (unsigned char)(v >> 24)};
    (void)buf_append(b, c, 4);
}

static void m_tuple(struct buf *b, size_t n)
{
    (void)buf_append(b, "(", 1);
    m_u32(b, (uint32_t)n);
}

static void m_bytes(struct buf *b, const void *p, size_t n)
{
    (void)buf_append(b, "s", 1);
    m_u32(b, (uint32_t)n);
    (void)buf_append(b, p, n);
}

/* An int: RLIM_INFINITY (all ones) is Python's resource.RLIM_INFINITY, -1. */
static void m_int(struct buf *b, uint64_t v)
{
    if (v == UINT64_MAX) {
        (void)buf_append(b, "i", 1);
        m_u32(b, UINT32_MAX);
        return;
    }
    if (v <= INT32_MAX) {
        (void)buf_append(b, "i", 1);
        m_u32(b, (uint32_t)v);
        return;
    }
    /* TYPE_LONG: a digit count, then 15-bit digits, least significant first. */
    uint16_t d[5];
    uint32_t n = 0;
    while (v) {
        d[n++] = (uint16_t)(v & 0x7fff);
        v >>= 15;
    }
    (void)buf_append(b, "l", 1);
    m_u32(b, n);
    for (uint32_t i = 0; i < n; i++) {
        unsigned char c[2] = {(unsigned char)d[i], (unsigned char)(d[i] >> 8)};
        (void)buf_append(b, c, 2);
    }
}

void sbx_pywarm_encode(const struct sbx_spec *s, bool cgroup_memory, struct buf *out)
{
    struct sbx_rlimit rl[SBX_RLIMITS_MAX];
    size_t nrl = sbx_runner_rlimits(&s->limits, cgroup_memory, rl);
    m_tuple(out, 5);
    m_bytes(out, s->code, s->code_len);
    m_tuple(out, s->nfiles);
    for (size_t i = 0; i < s->nfiles; i++) {
        m_tuple(out, 3);
        m_bytes(out, s->files[i].name, strlen(s->files[i].name));
        m_bytes(out, s->files[i].data, s->files[i].len);
        m_int(out, s->files[i].mode);
    }
    m_tuple(out, s->envc);
    for (size_t i = 0; i < s->envc; i++)
        m_bytes(out, s->env[i], strlen(s->env[i]));
    m_tuple(out, nrl);
    for (size_t i = 0; i < nrl; i++) {
        m_tuple(out, 4);
        m_int(out, (uint64_t)rl[i].res);
        m_int(out, rl[i].soft);
        m_int(out, rl[i].hard);
        (void)buf_append(out, "u", 1); /* str, UTF-8 */
        m_u32(out, (uint32_t)strlen(rl[i].name));
        (void)buf_append(out, rl[i].name, strlen(rl[i].name));
    }
    (void)buf_append(out, s->collect_files ? "T" : "F", 1);
}
