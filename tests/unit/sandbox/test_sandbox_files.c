/* File names an agent gives for /work: what is refused, and that creation never follows or overwrites. */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/alloc.h"
#include "sandbox/sbx_files.h"
#include "test.h"

static bool name_ok(const char *s)
{
    return sbx_spec_file_name_ok(s, strlen(s));
}

static void test_names(void)
{
    static const char *const good[] = {"main.py", "data.csv", "a",  "with space.txt", "ünïcode.txt",
                                       "a..b",    "x-",       "x.", "UPPER",          "1"};
    static const char *const bad[] = {"",        ".",   "..",     "../x", "x/..",      "a/b",     "/etc/passwd",
                                      ".hidden", "-rf", "--help", "a\nb", "tab\there", "del\x7f", "..\\x/y"};
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++)
        ok(name_ok(good[i]));
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        ok(!name_ok(bad[i]));
    char longname[300];
    memset(longname, 'a', sizeof(longname));
    ok(sbx_spec_file_name_ok(longname, 255));
    ok(!sbx_spec_file_name_ok(longname, 256));
    ok(!sbx_spec_file_name_ok("a\0b", 3)); /* NUL inside */
    ok(!sbx_spec_file_name_ok(NULL, 0));
}

static void test_write(void)
{
    char dir[] = "/tmp/sbx-files-XXXXXX";
    ok(mkdtemp(dir) != NULL);
    int dfd = open(dir, O_RDONLY | O_DIRECTORY);
    ok(dfd >= 0);
    struct buf err = BUF_INIT(512);
    struct sbx_file files[] = {
        {.name = "a.txt", .data = "hello", .len = 5, .mode = 0},
        {.name = "run.sh", .data = "#!/bin/sh\n", .len = 10, .mode = 04755}, /* setuid bit is dropped */
    };
    ok(sbx_files_write(dfd, files, 2, &err) == 0);
    struct stat st;
    ok(fstatat(dfd, "a.txt", &st, 0) == 0 && st.st_size == 5 && (st.st_mode & 07777) == 0644);
    ok(fstatat(dfd, "run.sh", &st, 0) == 0 && (st.st_mode & 07777) == 0755);

    /* An existing entry is never overwritten, and a symlink is never followed. */
    char target[300];
    snprintf(target, sizeof(target), "%s/target", dir);
    ok(symlinkat(target, dfd, "link") == 0);
    struct sbx_file evil = {.name = "link", .data = "pwned", .len = 5, .mode = 0};
    buf_reset(&err);
    ok(sbx_files_write(dfd, &evil, 1, &err) == -1);
    ok(err.data && strstr(err.data, "link") != NULL);
    ok(access(target, F_OK) == -1 && errno == ENOENT);
    struct sbx_file again = {.name = "a.txt", .data = "x", .len = 1, .mode = 0};
    ok(sbx_files_write(dfd, &again, 1, &err) == -1);
    ok(fstatat(dfd, "a.txt", &st, 0) == 0 && st.st_size == 5);
    /* A refused name is refused here too, not only by the spec check. */
    struct sbx_file dotdot = {.name = "../escape", .data = "x", .len = 1, .mode = 0};
    ok(sbx_files_write(dfd, &dotdot, 1, &err) == -1);
    char esc[300];
    snprintf(esc, sizeof(esc), "%s/../escape", dir);
    ok(access(esc, F_OK) == -1);

    unlinkat(dfd, "a.txt", 0);
    unlinkat(dfd, "run.sh", 0);
    unlinkat(dfd, "link", 0);
    close(dfd);
    ok(rmdir(dir) == 0);
    buf_free(&err);
}

static void put(int dfd, const char *name, const char *text)
{
    int fd = openat(dfd, name, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    ok(fd >= 0);
    ok(write(fd, text, strlen(text)) == (ssize_t)strlen(text));
    close(fd);
}

static void test_collect(void)
{
    char dir[] = "/tmp/sbx-collect-XXXXXX";
    ok(mkdtemp(dir) != NULL);
    int dfd = open(dir, O_RDONLY | O_DIRECTORY);
    ok(dfd >= 0);
    put(dfd, "b.txt", "bee");
    put(dfd, "a.txt", "ay");
    put(dfd, "in.txt", "given");     /* an input left as given: not an output */
    put(dfd, "main.py", "print(1)"); /* the snippet, likewise */
    put(dfd, "bad\xff.txt", "x");    /* a name that is not UTF-8: left out, flagged */
    ok(symlinkat("/etc/hostname", dfd, "link") == 0);
    ok(mkfifoat(dfd, "fifo", 0600) == 0); /* opened blocking, it would hang */
    ok(mkdirat(dfd, "sub", 0700) == 0);
    struct sbx_files_known known[] = {
        {.name = "in.txt", .len = 5, .hash = sbx_files_hash("given", 5)},
        {.name = "main.py", .len = 8, .hash = sbx_files_hash("print(1)", 8)},
    };
    struct sbx_result res;
    memset(&res, 0, sizeof(res));
    sbx_files_collect(dup(dfd), known, 2, 10, 1000, &res);
    ok(res.files_collected && res.files_truncated); /* the bad name */
    ok(res.nfiles == 2);
    ok(res.nfiles == 2 && strcmp(res.files[0].name, "a.txt") == 0 && res.files[0].len == 2 &&
       memcmp(res.files[0].data, "ay", 2) == 0 && res.files[0].mode == 0600);
    ok(res.nfiles == 2 && strcmp(res.files[1].name, "b.txt") == 0);
    sbx_result_free(&res);

    /* a changed input is an output; count and byte limits leave files out, by name order */
    put(dfd, "in.txt", "changed");
    unlinkat(dfd, "bad\xff.txt", 0);
    memset(&res, 0, sizeof(res));
    sbx_files_collect(dup(dfd), known, 2, 10, 1000, &res);
    ok(!res.files_truncated && res.nfiles == 3 && strcmp(res.files[2].name, "in.txt") == 0);
    sbx_result_free(&res);
    memset(&res, 0, sizeof(res));
    sbx_files_collect(dup(dfd), known, 2, 1, 1000, &res);
    ok(res.files_truncated && res.nfiles == 1 && strcmp(res.files[0].name, "a.txt") == 0);
    sbx_result_free(&res);
    memset(&res, 0, sizeof(res));
    sbx_files_collect(dup(dfd), known, 2, 10, 4, &res); /* "ay" fits, "bee" not, "changed" not */
    ok(res.files_truncated && res.nfiles == 1 && strcmp(res.files[0].name, "a.txt") == 0);
    sbx_result_free(&res);

    static const char *const names[] = {"a.txt", "b.txt", "in.txt", "main.py", "link", "fifo"};
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
        ok(unlinkat(dfd, names[i], 0) == 0);
    ok(unlinkat(dfd, "sub", AT_REMOVEDIR) == 0);
    close(dfd);
    ok(rmdir(dir) == 0);
}

static bool path_ok(const char *s)
{
    return sbx_spec_file_path_ok(s, strlen(s));
}

static void test_paths(void)
{
    static const char *const good[] = {"main.py", "out/a.txt", "a/b/c.csv", "ü/ñ.txt", "a..b/c..d",
                                       "d1/d2/d3/d4/d5/d6/d7/d8/f"}; /* 8 directories */
    static const char *const bad[] = {"",      "/",        "/etc/passwd", "a//b",    "a/",     "/a",
                                      "a/..",  "../x",     "a/../b",      "a/./b",   "./a",    "a/.hidden",
                                      "a/-rf", "a/b\n/c", "a\tb/c",       "d1/d2/d3/d4/d5/d6/d7/d8/d9/f"};
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++)
        ok(path_ok(good[i]));
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        if (!ok(!path_ok(bad[i])))
            printf("# accepted: %s\n", bad[i]);
    char longp[SBX_FILES_PATH_MAX + 8];
    for (size_t i = 0; i < sizeof(longp); i++)
        longp[i] = i % 200 == 199 ? '/' : 'a';
    ok(sbx_spec_file_path_ok(longp, SBX_FILES_PATH_MAX));
    ok(!sbx_spec_file_path_ok(longp, SBX_FILES_PATH_MAX + 1));
    ok(!sbx_spec_file_path_ok("a/\0b", 4));
    ok(!sbx_spec_file_path_ok(NULL, 0));
}

/* Files given with directories in their names: the directories are made, one level at a time, never through a
 * symlink. */
static void test_write_paths(void)
{
    char dir[] = "/tmp/sbx-files-XXXXXX", outside[] = "/tmp/sbx-outside-XXXXXX";
    ok(mkdtemp(dir) != NULL && mkdtemp(outside) != NULL);
    int dfd = open(dir, O_RDONLY | O_DIRECTORY);
    struct buf err = BUF_INIT(512);
    struct sbx_file files[] = {
        {.name = "out/a.txt", .data = "A", .len = 1},
        {.name = "out/deep/b.txt", .data = "BB", .len = 2, .mode = 0600},
        {.name = "top.txt", .data = "T", .len = 1},
    };
    ok(sbx_files_write(dfd, files, 3, &err) == 0);
    struct stat st;
    ok(fstatat(dfd, "out/a.txt", &st, 0) == 0 && st.st_size == 1);
    ok(fstatat(dfd, "out/deep/b.txt", &st, 0) == 0 && st.st_size == 2 && (st.st_mode & 0777) == 0600);
    ok(fstatat(dfd, "out/deep", &st, 0) == 0 && S_ISDIR(st.st_mode));
    /* a file where a directory is wanted */
    struct sbx_file under_file = {.name = "top.txt/x", .data = "x", .len = 1};
    buf_reset(&err);
    ok(sbx_files_write(dfd, &under_file, 1, &err) == -1 && err.data && strstr(err.data, "top.txt/x"));
    /* a symlinked directory is not followed: nothing is written outside */
    ok(symlinkat(outside, dfd, "ln") == 0);
    struct sbx_file through = {.name = "ln/pwned", .data = "x", .len = 1};
    buf_reset(&err);
    ok(sbx_files_write(dfd, &through, 1, &err) == -1);
    char esc[300];
    snprintf(esc, sizeof(esc), "%s/pwned", outside);
    ok(access(esc, F_OK) == -1 && errno == ENOENT);
    struct sbx_file up = {.name = "out/../../escape", .data = "x", .len = 1};
    ok(sbx_files_write(dfd, &up, 1, &err) == -1);
    close(dfd);
    char cmd[200];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s' '%s'", dir, outside);
    ok(system(cmd) == 0);
    buf_free(&err);
}

static void mkdirs(int dfd, const char *path)
{
    char p[512];
    snprintf(p, sizeof(p), "%s", path);
    for (char *s = p; (s = strchr(s, '/')) != NULL; s++) {
        *s = '\0';
        mkdirat(dfd, p, 0700);
        *s = '/';
    }
    mkdirat(dfd, p, 0700);
}

static void test_collect_tree(void)
{
    char dir[] = "/tmp/sbx-tree-XXXXXX", outside[] = "/tmp/sbx-outside-XXXXXX";
    ok(mkdtemp(dir) != NULL && mkdtemp(outside) != NULL);
    int dfd = open(dir, O_RDONLY | O_DIRECTORY);
    int ofd = open(outside, O_RDONLY | O_DIRECTORY);
    put(ofd, "secret.txt", "secret");
    mkdirs(dfd, "a/b");
    put(dfd, "z.txt", "z");
    put(dfd, "a.txt", "top a");
    put(dfd, "a/x.txt", "x");
    put(dfd, "a/b/y.txt", "y");
    put(dfd, "a/in.txt", "given"); /* an input (with a directory) left as given */
    ok(mkfifoat(dfd, "a/b/fifo", 0600) == 0);
    ok(symlinkat(outside, dfd, "evil") == 0);     /* a symlinked directory: never walked */
    ok(symlinkat(outside, dfd, "a/b/evil2") == 0);
    mkdirs(dfd, "d1/d2/d3/d4/d5/d6/d7/d8");
    put(dfd, "d1/d2/d3/d4/d5/d6/d7/d8/f8.txt", "8 deep");
    struct sbx_files_known known[] = {{.name = "a/in.txt", .len = 5, .hash = sbx_files_hash("given", 5)}};
    struct sbx_result res;
    memset(&res, 0, sizeof(res));
    sbx_files_collect(dup(dfd), known, 1, 64, 1 << 20, &res);
    static const char *const want[] = {"a.txt", "a/b/y.txt", "a/x.txt", "d1/d2/d3/d4/d5/d6/d7/d8/f8.txt", "z.txt"};
    ok(!res.files_truncated);
    is_int(res.nfiles, 5);
    for (size_t i = 0; i < res.nfiles && i < 5; i++)
        is_str(res.files[i].name, want[i]);
    ok(res.nfiles == 5 && res.files[1].len == 1 && res.files[1].data[0] == 'y');
    for (size_t i = 0; i < res.nfiles; i++)
        ok(strstr(res.files[i].name, "secret") == NULL && strstr(res.files[i].name, "evil") == NULL);
    sbx_result_free(&res);

    /* one level deeper than SBX_FILES_DEPTH: not walked, flagged */
    mkdirs(dfd, "d1/d2/d3/d4/d5/d6/d7/d8/d9");
    put(dfd, "d1/d2/d3/d4/d5/d6/d7/d8/d9/f9.txt", "9 deep");
    memset(&res, 0, sizeof(res));
    sbx_files_collect(dup(dfd), known, 1, 64, 1 << 20, &res);
    ok(res.files_truncated);
    is_int(res.nfiles, 5);
    for (size_t i = 0; i < res.nfiles; i++)
        ok(strstr(res.files[i].name, "f9") == NULL);
    sbx_result_free(&res);

    /* the limits apply in name order over the whole tree */
    memset(&res, 0, sizeof(res));
    sbx_files_collect(dup(dfd), known, 1, 2, 1 << 20, &res);
    ok(res.files_truncated && res.nfiles == 2 && strcmp(res.files[1].name, "a/b/y.txt") == 0);
    sbx_result_free(&res);

    /* many empty directories: the walk stops after SBX_FILES_OUT_SCAN entries, flagged */
    ok(mkdirat(dfd, "many", 0700) == 0);
    int mfd = openat(dfd, "many", O_RDONLY | O_DIRECTORY);
    for (int i = 0; i < SBX_FILES_OUT_SCAN + 100; i++) {
        char nm[32];
        snprintf(nm, sizeof(nm), "e%05d", i);
        mkdirat(mfd, nm, 0700);
    }
    close(mfd);
    memset(&res, 0, sizeof(res));
    sbx_files_collect(dup(dfd), known, 1, 64, 1 << 20, &res);
    ok(res.files_truncated);
    ok(res.nfiles >= 3 && strcmp(res.files[0].name, "a.txt") == 0); /* those before "many/" were taken */
    sbx_result_free(&res);

    close(dfd);
    close(ofd);
    char cmd[200];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s' '%s'", dir, outside);
    ok(system(cmd) == 0);
}

int main(void)
{
    subtest("file names", test_names);
    subtest("file paths", test_paths);
    subtest("creating files under a dirfd", test_write);
    subtest("creating files in directories", test_write_paths);
    subtest("collecting the files a run left", test_collect);
    subtest("collecting from directories", test_collect_tree);
    return done_testing();
}
