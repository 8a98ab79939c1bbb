/*
 * qwex-shim: the parent of one run's command, and nothing else.
 *
 *   qwex-shim --run-dir DIR [--exit-fallback PATH] [--grace-ms N] [--report-tag TAG] -- PROGRAM [ARG...]
 *
 * Whoever starts it (qwex, qwexd, a per-run monitor) puts it in its own
 * session and gives it the command's stdin, stdout and stderr. It outlives its
 * starter: only the parent of a process can learn its exact exit status, so a
 * later qwex process learns how the run ended from the files written here.
 * libexec/qwex-shim.pl keeps the same contract where no C compiler was found;
 * src/shim.ts reads what both write.
 *
 * Contract:
 * a. It forks. The child makes itself the leader of a new process group,
 *    resets its signal mask and dispositions, closes every descriptor but
 *    0-2, and blocks reading a "go" pipe. It execs PROGRAM (searched in PATH)
 *    only after reading one "go" byte; on EOF (the shim died) it exits
 *    without running anything.
 * b. It creates DIR/shim.json with O_CREAT|O_EXCL and writes it in ONE write():
 *      {"shimPid":N,"shimStartTime":"T","pid":N,"pgid":N,"startTime":"T"}
 *    (start times: field 22 of /proc/PID/stat on Linux, as src/process-info.ts
 *    reads it; omitted elsewhere), then fsync, close, fsync DIR, every call
 *    checked. So shim.json exists and is complete before the command can run.
 *    EEXIST: another shim already started this run: the blocked child is
 *    killed, fd 3 gets "exists", exit status 3. Any other failure (ENOSPC...):
 *    shim.json is removed, the child killed, fd 3 gets "failed ERRNO", exit 4.
 *    Nothing ran and no exit.json is written in both cases (nor when no
 *    pipe or process could be made: "failed ERRNO", exit 4, too).
 * c. It releases the child ("go") and learns through a close-on-exec pipe
 *    whether exec worked. Exec failure: exit.json gets exitCode 127 for
 *    ENOENT, else 126, with errno set, THEN fd 3 gets "failed ERRNO"; exit 0.
 * d. Fd 3, when open at start, gets exactly one line: "started PID",
 *    "failed ERRNO" or "exists"; write errors there are ignored; it is closed
 *    after. A bad command line gets "failed 22" there and exit status 2.
 *    With --report-tag TAG the line starts with TAG and a space (the
 *    spawner's shims share one pipe: libexec/qwex-spawner.c).
 * e. Linux: it is a child subreaper, so descendants orphaned by their parent
 *    (a `setsid sleep` whose shell exited) re-parent to it and stay findable.
 * f. SIGTERM, SIGINT, SIGHUP and SIGQUIT are forwarded to the whole tree: the
 *    command's process group and, on Linux, every other descendant of the
 *    shim (found through /proc ppid links), each process once. SIGUSR1 means
 *    SIGKILL to the whole tree. The shim keeps running until the command
 *    (its direct child) has ended.
 * g. When the command ends, every leftover descendant or group member gets
 *    SIGTERM (and SIGCONT, so a stopped one sees it); after --grace-ms
 *    (default 2000; 0 after SIGUSR1) what is left gets SIGKILL, until none is
 *    left (new children of a fork race re-parent to the subreaper and are
 *    caught; a process that does not die within KILL_WAIT_MS of SIGKILL, stuck
 *    in the kernel, is given up). Then it writes
 *      {"exitCode":N|null,"signal":N|null,"errno":N|null,"leftovers":N}
 *    leftovers: how many processes it had to stop (Linux: distinct pids;
 *    elsewhere 1 when the group outlived the command, a lower bound).
 * h. exit.json is written atomically, every call checked: DIR/.exit.json.PID.tmp,
 *    fsync, close, rename to DIR/exit.json, fsync DIR. If a step fails, the
 *    temporary file is removed and --exit-fallback PATH is tried the same way
 *    (temporary file .NAME.PID.tmp beside it; qwex passes a path on another
 *    filesystem). If both fail, one line says so on stderr and both are tried
 *    again every second until one works: the status is never lost, never torn,
 *    never empty. Signals are blocked from then on. Then it exits 0.
 * i. SIGPIPE is ignored in the shim; EINTR is handled everywhere.
 *
 * QWEX_FSYNC=0 in its environment skips every fsync, as it does in qwex
 * (src/fs-atomic.ts): files stay atomic and every write is still checked,
 * but a power loss may lose them.
 *
 * Test hook: QWEX_SHIM_TEST_STOP_BEFORE_GO=1 makes the shim stop itself
 * (SIGSTOP) after writing shim.json and before releasing the child, so a
 * test can kill it exactly there. It is removed from the command's environment.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#ifdef __linux__
#include <sys/prctl.h>
#include <sys/syscall.h>
#endif

#define EXIT_USAGE 2
#define EXIT_EXISTS 3
#define EXIT_FAILED 4
/* The child's status when the shim died before releasing it: it ran nothing. */
#define EXIT_NOT_RELEASED 125
#define DEFAULT_GRACE_MS 2000
/* How often leftovers are looked for while they are asked to stop. */
#define POLL_MS 20
/* How long processes sent SIGKILL may take to go before the status is written anyway. */
#define KILL_WAIT_MS 5000
#define RETRY_SECONDS 1

static const char *run_dir;
static const char *exit_fallback;
static long grace_ms = DEFAULT_GRACE_MS;

static int report_fd = -1;
static const char *report_tag;
static int wake_pipe[2] = {-1, -1};
static pid_t shim_pid;
static pid_t child_pid;
static int fsync_enabled = 1;
/* Linux 3.4 and later: orphaned descendants re-parent to the shim. */
static int subreaper;

static volatile sig_atomic_t got_term, got_int, got_hup, got_quit, got_usr1;
static const int handled_signals[] = {SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGUSR1, SIGCHLD};
#define HANDLED_COUNT (sizeof handled_signals / sizeof handled_signals[0])

/* One line on the run's stderr, for whoever reads its log. */
static void say(const char *fmt, ...) {
  char line[1024];
  va_list ap;
  int n;
  va_start(ap, fmt);
  n = vsnprintf(line, sizeof line, fmt, ap);
  va_end(ap);
  if (n > 0) {
    if ((size_t)n >= sizeof line) n = sizeof line - 1;
    if (write(STDERR_FILENO, line, (size_t)n) < 0) {
      /* the run's stderr is gone or full: nobody to tell */
    }
  }
}

/* Exactly one line for whoever started us; it may be gone, so errors are ignored. */
static void report(const char *word, long number, int with_number) {
  char line[160];
  int n;
  if (report_fd < 0) return;
  const char *tag = report_tag == NULL ? "" : report_tag, *space = report_tag == NULL ? "" : " ";
  n = with_number ? snprintf(line, sizeof line, "%s%s%s %ld\n", tag, space, word, number) : snprintf(line, sizeof line, "%s%s%s\n", tag, space, word);
  if (n > 0 && write(report_fd, line, (size_t)n) < 0) {
    /* ignored: see above */
  }
  close(report_fd);
  report_fd = -1;
}

static long long now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void on_signal(int sig) {
  int saved = errno;
  char byte = 0;
  switch (sig) {
    case SIGTERM: got_term = 1; break;
    case SIGINT: got_int = 1; break;
    case SIGHUP: got_hup = 1; break;
    case SIGQUIT: got_quit = 1; break;
    case SIGUSR1: got_usr1 = 1; break;
    default: break; /* SIGCHLD only wakes the loop */
  }
  /* Non-blocking: a full pipe already holds a wake-up. */
  if (write(wake_pipe[1], &byte, 1) < 0) {
    /* see above */
  }
  errno = saved;
}

static void handled_set(sigset_t *set) {
  size_t i;
  sigemptyset(set);
  for (i = 0; i < HANDLED_COUNT; i++) sigaddset(set, handled_signals[i]);
}

static void block_handled(int how) {
  sigset_t set;
  handled_set(&set);
  sigprocmask(how, &set, NULL);
}

/* Waits until a signal arrived or timeout_ms passed (-1: no limit), then empties the wake pipe. */
static void wait_for_wake(int timeout_ms) {
  struct pollfd p;
  char buf[64];
  p.fd = wake_pipe[0];
  p.events = POLLIN;
  p.revents = 0;
  if (poll(&p, 1, timeout_ms) < 0 && errno != EINTR) {
    /* cannot wait on the pipe: do not spin */
    struct timespec ts = {0, POLL_MS * 1000000L};
    nanosleep(&ts, NULL);
  }
  while (read(wake_pipe[0], buf, sizeof buf) > 0) {
  }
}

static int set_cloexec(int fd, int nonblock) {
  int flags = fcntl(fd, F_GETFD);
  if (flags < 0 || fcntl(fd, F_SETFD, flags | FD_CLOEXEC) < 0) return -1;
  if (nonblock) {
    flags = fcntl(fd, F_GETFL);
    if (flags < 0 || fcntl(fd, F_SETFL, flags | O_NONBLOCK) < 0) return -1;
  }
  return 0;
}

static int make_pipe(int fds[2], int nonblock) {
  if (pipe(fds) < 0) return -1;
  if (set_cloexec(fds[0], nonblock) < 0 || set_cloexec(fds[1], nonblock) < 0) {
    close(fds[0]);
    close(fds[1]);
    return -1;
  }
  return 0;
}

/* ---- the child ---------------------------------------------------------- */

#if defined(__linux__) && defined(SYS_close_range)
/* Linux 5.9 and later; an older kernel says ENOSYS and the listing below does it. */
static int close_range_between(unsigned first, unsigned last) {
  if (first > last) return 0;
  return (int)syscall(SYS_close_range, first, last, 0);
}
#endif

/* Closes every descriptor from 3 up, except keep1 and keep2 (3 <= keep1 < keep2). */
static void close_fds_except(int keep1, int keep2) {
  const char *fd_dir;
  int fds[512];
  int count, i;
  struct rlimit rl;
  long max, fd;
#if defined(__linux__) && defined(SYS_close_range)
  if (close_range_between(3, (unsigned)keep1 - 1) == 0 && close_range_between((unsigned)keep1 + 1, (unsigned)keep2 - 1) == 0 &&
      close_range_between((unsigned)keep2 + 1, ~0U) == 0)
    return;
#endif
#ifdef __linux__
  fd_dir = "/proc/self/fd";
#else
  fd_dir = "/dev/fd";
#endif
  /* Collect, then close, so the listing is not changed under readdir. */
  for (;;) {
    DIR *d = opendir(fd_dir);
    struct dirent *e;
    if (d == NULL) break;
    count = 0;
    while (count < (int)(sizeof fds / sizeof fds[0]) && (e = readdir(d)) != NULL) {
      char *end;
      long n = strtol(e->d_name, &end, 10);
      if (*end != '\0' || end == e->d_name || n < 3 || n == keep1 || n == keep2 || n == dirfd(d)) continue;
      fds[count++] = (int)n;
    }
    closedir(d);
    for (i = 0; i < count; i++) close(fds[i]);
    if (count < (int)(sizeof fds / sizeof fds[0])) return;
  }
  max = 65536;
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY && (long)rl.rlim_cur < max) max = (long)rl.rlim_cur;
  for (fd = 3; fd < max; fd++)
    if (fd != keep1 && fd != keep2) close((int)fd);
}

static void run_child(int go_read, int err_write, char **command) {
  struct sigaction dfl;
  sigset_t empty;
  int sig, e;
  char byte;
  ssize_t n;

  setpgid(0, 0);
  memset(&dfl, 0, sizeof dfl);
  dfl.sa_handler = SIG_DFL;
  sigemptyset(&dfl.sa_mask);
#ifdef NSIG
  for (sig = 1; sig < NSIG; sig++)
#else
  for (sig = 1; sig < 65; sig++)
#endif
    if (sig != SIGKILL && sig != SIGSTOP) sigaction(sig, &dfl, NULL); /* some (glibc's reserved ones) refuse: fine */
  sigemptyset(&empty);
  sigprocmask(SIG_SETMASK, &empty, NULL);
  if (go_read < err_write) close_fds_except(go_read, err_write);
  else close_fds_except(err_write, go_read);

  do n = read(go_read, &byte, 1);
  while (n < 0 && errno == EINTR);
  if (n != 1) _exit(EXIT_NOT_RELEASED);
  close(go_read);

  execvp(command[0], command);
  e = errno;
  do n = write(err_write, &e, sizeof e);
  while (n < 0 && errno == EINTR);
  _exit(127);
}

/* ---- files -------------------------------------------------------------- */

/* Field 22 of /proc/PID/stat (clock ticks after boot when it started); 0 when found. */
static int start_time(pid_t pid, char *out, size_t size) {
#ifdef __linux__
  char path[64], buf[2048];
  char *p;
  int fd, field;
  ssize_t n;
  snprintf(path, sizeof path, "/proc/%ld/stat", (long)pid);
  do fd = open(path, O_RDONLY | O_CLOEXEC);
  while (fd < 0 && errno == EINTR);
  if (fd < 0) return -1;
  do n = read(fd, buf, sizeof buf - 1);
  while (n < 0 && errno == EINTR);
  close(fd);
  if (n <= 0) return -1;
  buf[n] = '\0';
  /* The command name (field 2) may hold spaces and parentheses: count from the last ')'. */
  p = strrchr(buf, ')');
  if (p == NULL) return -1;
  p += 2;
  for (field = 3; field < 22 && p != NULL; field++) {
    p = strchr(p, ' ');
    if (p != NULL) p++;
  }
  if (p == NULL) return -1;
  n = (ssize_t)strcspn(p, " \n");
  if (n == 0 || (size_t)n >= size) return -1;
  memcpy(out, p, (size_t)n);
  out[n] = '\0';
  return 0;
#else
  (void)pid;
  (void)out;
  (void)size;
  return -1;
#endif
}

static int write_all(int fd, const char *data, size_t len) {
  while (len > 0) {
    ssize_t n = write(fd, data, len);
    if (n < 0) {
      if (errno == EINTR) continue;
      return -1;
    }
    if (n == 0) {
      errno = ENOSPC;
      return -1;
    }
    data += n;
    len -= (size_t)n;
  }
  return 0;
}

static int fsync_file(int fd) {
  int r;
  if (!fsync_enabled) return 0;
  do r = fsync(fd);
  while (r < 0 && errno == EINTR);
  return r;
}

/* Some filesystems cannot fsync a directory; the rename is atomic all the same. */
static int fsync_dir(const char *dir) {
  int fd, r;
  if (!fsync_enabled) return 0;
  do fd = open(dir, O_RDONLY | O_CLOEXEC);
  while (fd < 0 && errno == EINTR);
  if (fd < 0) return -1;
  do r = fsync(fd);
  while (r < 0 && errno == EINTR);
  if (r < 0 && (errno == EINVAL || errno == ENOTSUP || errno == EROFS || errno == EBADF)) r = 0;
  if (r < 0) {
    int e = errno;
    close(fd);
    errno = e;
    return -1;
  }
  close(fd);
  return 0;
}

static void dir_of(const char *path, char *out, size_t size) {
  const char *slash = strrchr(path, '/');
  if (slash == NULL) snprintf(out, size, ".");
  else if (slash == path) snprintf(out, size, "/");
  else snprintf(out, size, "%.*s", (int)(slash - path), path);
}

/* Writes path atomically (temporary file beside it, fsync, rename, fsync the directory); 0 or an errno. */
static int write_file_atomic(const char *path, const char *data, size_t len) {
  char dir[PATH_MAX], tmp[PATH_MAX + 64];
  const char *base = strrchr(path, '/');
  int fd, e;
  base = base ? base + 1 : path;
  dir_of(path, dir, sizeof dir);
  if ((size_t)snprintf(tmp, sizeof tmp, "%s/.%s.%ld.tmp", dir, base, (long)shim_pid) >= sizeof tmp) return ENAMETOOLONG;
  do fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  while (fd < 0 && errno == EINTR);
  if (fd < 0) return errno;
  if (write_all(fd, data, len) < 0 || fsync_file(fd) < 0) goto failed;
  if (close(fd) < 0 && errno != EINTR) {
    fd = -1;
    goto failed;
  }
  fd = -1;
  if (rename(tmp, path) < 0) goto failed;
  if (fsync_dir(dir) < 0) return errno;
  return 0;
failed:
  e = errno;
  if (fd >= 0) close(fd);
  unlink(tmp);
  return e;
}

static void json_number(char *out, size_t size, int present, long value) {
  if (present) snprintf(out, size, "%ld", value);
  else snprintf(out, size, "null");
}

static void write_exit(int exited, long exit_code, int signaled, long signal_number, int failed, long errno_value, long leftovers) {
  char code[24], sig[24], err[24], json[160], primary[PATH_MAX];
  int n, said = 0;
  json_number(code, sizeof code, exited, exit_code);
  json_number(sig, sizeof sig, signaled, signal_number);
  json_number(err, sizeof err, failed, errno_value);
  n = snprintf(json, sizeof json, "{\"exitCode\":%s,\"signal\":%s,\"errno\":%s,\"leftovers\":%ld}\n", code, sig, err, leftovers);
  snprintf(primary, sizeof primary, "%s/exit.json", run_dir);
  for (;;) {
    int e1 = write_file_atomic(primary, json, (size_t)n);
    int e2 = 0;
    if (e1 == 0) return;
    if (exit_fallback != NULL) {
      e2 = write_file_atomic(exit_fallback, json, (size_t)n);
      if (e2 == 0) {
        say("qwex-shim: cannot write %s (%s); wrote the exit status to the fallback path\n", primary, strerror(e1));
        return;
      }
    }
    if (!said) {
      say("qwex-shim: cannot write %s (%s); retrying every second\n", primary, strerror(e1));
      if (exit_fallback != NULL) say("qwex-shim: cannot write %s (%s) either\n", exit_fallback, strerror(e2));
      said = 1;
    }
    sleep(RETRY_SECONDS);
  }
}

/* ---- the process tree --------------------------------------------------- */

#ifdef __linux__
struct proc {
  pid_t pid, ppid, pgrp;
  char state;
  /* 1: alive and ours to stop; 2: ours but ended (a zombie). */
  char mark;
  /* Descends from the shim: 0 not known yet, 1 yes, 2 no. */
  char desc;
};

static struct proc *procs;
static size_t proc_count, proc_cap;

/* Reads every process's parent, group and state; -1 when /proc cannot be read. */
static int scan_procs(void) {
  DIR *d = opendir("/proc");
  struct dirent *e;
  if (d == NULL) return -1;
  proc_count = 0;
  while ((e = readdir(d)) != NULL) {
    char path[64], buf[512];
    char *end, *p;
    long pid = strtol(e->d_name, &end, 10);
    int fd;
    ssize_t n;
    struct proc pr;
    if (*end != '\0' || end == e->d_name || pid <= 0) continue;
    snprintf(path, sizeof path, "/proc/%ld/stat", pid);
    do fd = open(path, O_RDONLY | O_CLOEXEC);
    while (fd < 0 && errno == EINTR);
    if (fd < 0) continue; /* it ended meanwhile */
    do n = read(fd, buf, sizeof buf - 1);
    while (n < 0 && errno == EINTR);
    close(fd);
    if (n <= 0) continue;
    buf[n] = '\0';
    p = strrchr(buf, ')');
    if (p == NULL || p[1] != ' ') continue;
    pr.pid = (pid_t)pid;
    pr.state = p[2];
    pr.ppid = (pid_t)strtol(p + 3, &end, 10);
    pr.pgrp = (pid_t)strtol(end, NULL, 10);
    pr.mark = 0;
    pr.desc = 0;
    if (proc_count == proc_cap) {
      size_t cap = proc_cap ? proc_cap * 2 : 512;
      struct proc *grown = realloc(procs, cap * sizeof *procs);
      if (grown == NULL) break; /* what was read so far still counts */
      procs = grown;
      proc_cap = cap;
    }
    procs[proc_count++] = pr;
  }
  closedir(d);
  return 0;
}

static int by_pid(const void *a, const void *b) {
  pid_t x = ((const struct proc *)a)->pid, y = ((const struct proc *)b)->pid;
  return (x > y) - (x < y);
}

static struct proc *find_proc(pid_t pid) {
  struct proc key;
  key.pid = pid;
  return bsearch(&key, procs, proc_count, sizeof *procs, by_pid);
}

/* Whether p descends from the shim: walks up its parents, and remembers the answer for the whole way. */
static int descends(struct proc *p) {
  struct proc *way[64];
  size_t n = 0, i;
  int yes;
  for (;;) {
    if (p == NULL) { yes = 0; break; }
    if (p->pid == shim_pid) { yes = 1; break; }
    if (p->desc != 0) { yes = p->desc == 1; break; }
    if (n == sizeof way / sizeof way[0]) { yes = descends(p); break; } /* a deep tree: one more level of recursion per 64 */
    way[n++] = p;
    p = p->ppid > 0 && p->ppid != p->pid ? find_proc(p->ppid) : NULL;
  }
  for (i = 0; i < n; i++) way[i]->desc = yes ? 1 : 2;
  return yes;
}

/*
 * Marks the shim's descendants and the members of pgid, living ones only;
 * returns how many. Once the command (the group's leader) is reaped, a
 * process whose pid is pgid is someone else that got the number back: then
 * the group is not trusted any more, only descendants are.
 */
static size_t mark_tree(pid_t pgid) {
  size_t i, count = 0;
  qsort(procs, proc_count, sizeof *procs, by_pid);
  for (i = 0; i < proc_count; i++)
    if (procs[i].pid == pgid && procs[i].ppid != shim_pid) pgid = -1;
  for (i = 0; i < proc_count; i++) {
    struct proc *p = &procs[i];
    if (p->pid == shim_pid || !(descends(p) || p->pgrp == pgid)) continue;
    if (p->state == 'Z' || p->state == 'X') {
      p->mark = 2; /* ended, not reaped yet */
    } else {
      p->mark = 1;
      count++;
    }
  }
  return count;
}

/* The group by one killpg (so a member forked meanwhile is not missed), everyone else by pid: each once. */
static void signal_marked(pid_t pgid, int sig, int group_known_alive) {
  size_t i;
  int in_group = group_known_alive;
  for (i = 0; i < proc_count; i++)
    if (procs[i].mark == 1 && procs[i].pgrp == pgid) in_group = 1;
  if (in_group) killpg(pgid, sig);
  for (i = 0; i < proc_count; i++)
    if (procs[i].mark == 1 && procs[i].pgrp != pgid) kill(procs[i].pid, sig);
}
#endif

/* While the command runs: its group is certain to exist (the command is not reaped yet). */
static void signal_tree(int sig) {
#ifdef __linux__
  if (scan_procs() == 0) {
    mark_tree(child_pid);
    signal_marked(child_pid, sig, 1);
    return;
  }
#endif
  killpg(child_pid, sig);
}

/* Reaps every ended child; returns 1 (and its status) once the command itself was reaped. */
static int reap(int *status) {
  int found = 0;
  for (;;) {
    int st;
    pid_t w = waitpid(-1, &st, WNOHANG);
    if (w > 0) {
      if (w == child_pid) {
        *status = st;
        found = 1;
      }
      continue;
    }
    if (w < 0 && errno == EINTR) continue;
    return found;
  }
}

#ifdef __linux__
static pid_t *seen;
static unsigned char *termed;
static size_t seen_count, seen_cap;

static int remember(pid_t pid) {
  size_t i;
  for (i = 0; i < seen_count; i++)
    if (seen[i] == pid) return (int)i;
  if (seen_count == seen_cap) {
    size_t cap = seen_cap ? seen_cap * 2 : 64;
    pid_t *s = realloc(seen, cap * sizeof *seen);
    unsigned char *t;
    if (s == NULL) return -1;
    seen = s;
    t = realloc(termed, cap);
    if (t == NULL) return -1;
    termed = t;
    seen_cap = cap;
  }
  seen[seen_count] = pid;
  termed[seen_count] = 0;
  return (int)seen_count++;
}
#endif

/*
 * After the command ended: asks what is left of its tree to stop, then
 * kills it, and reaps it. Returns how many processes it had to stop.
 */
static long stop_leftovers(pid_t pgid, int kill_now) {
  long long deadline = now_ms() + (kill_now ? 0 : grace_ms);
  long long kill_since = 0;
  int unused;
#ifdef __linux__
  int st;
  pid_t w;
  reap(&unused);
  /* The common case, without reading /proc: as a subreaper, the shim is the parent of every descendant left. */
  do w = waitpid(-1, &st, WNOHANG);
  while (w < 0 && errno == EINTR);
  if (subreaper && w < 0 && errno == ECHILD && killpg(pgid, 0) < 0 && errno == ESRCH) return 0;
  if (scan_procs() == 0) {
    for (;;) {
      size_t i;
      long long now = now_ms();
      if (got_usr1) deadline = 0;
      got_term = got_int = got_hup = got_quit = got_usr1 = 0; /* everything left is being stopped anyway */
      if (mark_tree(pgid) == 0) break;
      for (i = 0; i < proc_count; i++)
        if (procs[i].mark == 1) remember(procs[i].pid);
      if (now >= deadline) {
        if (kill_since == 0) kill_since = now;
        else if (now - kill_since > KILL_WAIT_MS) {
          say("qwex-shim: leftover processes did not die after SIGKILL; giving up on them\n");
          break;
        }
        signal_marked(pgid, SIGKILL, 0);
      } else {
        /* SIGTERM each newcomer once; SIGCONT so that a stopped one can act on it. */
        for (i = 0; i < proc_count; i++) {
          int k;
          if (procs[i].mark != 1) continue;
          k = remember(procs[i].pid);
          if (k >= 0 && termed[k]) continue;
          kill(procs[i].pid, SIGTERM);
          kill(procs[i].pid, SIGCONT);
          if (k >= 0) termed[k] = 1;
        }
      }
      wait_for_wake(POLL_MS);
      reap(&unused);
      if (scan_procs() < 0) break;
    }
    reap(&unused);
    return (long)seen_count;
  }
#endif
  /* Without /proc: the process group is all we can see. */
  if (killpg(pgid, 0) < 0) return 0;
  killpg(pgid, SIGTERM);
  killpg(pgid, SIGCONT);
  for (;;) {
    long long now = now_ms();
    if (got_usr1) deadline = 0;
    got_term = got_int = got_hup = got_quit = got_usr1 = 0;
    reap(&unused);
    if (killpg(pgid, 0) < 0) break;
    if (now >= deadline) {
      if (kill_since == 0) kill_since = now;
      else if (now - kill_since > KILL_WAIT_MS) break;
      killpg(pgid, SIGKILL);
    }
    wait_for_wake(POLL_MS);
  }
  reap(&unused);
  return 1;
}

/* ---- main --------------------------------------------------------------- */

static int usage(const char *why) {
  say("qwex-shim: %s\nusage: qwex-shim --run-dir DIR [--exit-fallback PATH] [--grace-ms N] [--report-tag TAG] -- PROGRAM [ARG...]\n", why);
  report("failed", EINVAL, 1);
  return EXIT_USAGE;
}

static void abandon_child(int go_write) {
  int st;
  if (go_write >= 0) close(go_write);
  kill(child_pid, SIGKILL);
  while (waitpid(child_pid, &st, 0) < 0 && errno == EINTR) {
  }
}

int main(int argc, char **argv) {
  char **command = NULL;
  char shim_json[PATH_MAX], json[256], shim_start[32], child_start[32];
  int go[2], exec_err[2], i, fd, e, status = 0, kill_now = 0, hold = 0;
  size_t len;
  ssize_t n;
  struct sigaction sa;

  /* Before anything else is opened, fd 3 is whoever started us, or nothing. */
  if (fcntl(3, F_GETFD) >= 0) {
    report_fd = 3;
    fcntl(3, F_SETFD, FD_CLOEXEC);
  }
  /* So that no pipe of ours lands on 0-2. */
  for (i = 0; i <= 2; i++)
    if (fcntl(i, F_GETFD) < 0 && open("/dev/null", O_RDWR) != i) return EXIT_FAILED;

  for (i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--") == 0) {
      command = &argv[i + 1];
      break;
    } else if (strcmp(argv[i], "--run-dir") == 0 && i + 1 < argc) {
      run_dir = argv[++i];
    } else if (strcmp(argv[i], "--exit-fallback") == 0 && i + 1 < argc) {
      exit_fallback = argv[++i];
    } else if (strcmp(argv[i], "--report-tag") == 0 && i + 1 < argc) {
      report_tag = argv[++i];
      if (report_tag[0] == '\0' || strlen(report_tag) > 64 || strspn(report_tag, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_") != strlen(report_tag)) {
        report_tag = NULL;
        return usage("--report-tag needs 1 to 64 of A-Z a-z 0-9 - _");
      }
    } else if (strcmp(argv[i], "--grace-ms") == 0 && i + 1 < argc) {
      char *end;
      errno = 0;
      grace_ms = strtol(argv[++i], &end, 10);
      if (errno != 0 || *end != '\0' || end == argv[i] || grace_ms < 0 || grace_ms > 86400000L) return usage("--grace-ms needs a number of milliseconds (0 to 86400000)");
    } else {
      say("qwex-shim: unknown or incomplete option: %s\n", argv[i]);
      return usage("see the usage below");
    }
  }
  if (run_dir == NULL || run_dir[0] == '\0') return usage("--run-dir is required");
  if (command == NULL || command[0] == NULL) return usage("the command goes after --");
  if (exit_fallback != NULL && exit_fallback[0] == '\0') exit_fallback = NULL;
  if ((size_t)snprintf(shim_json, sizeof shim_json, "%s/shim.json", run_dir) >= sizeof shim_json - 32) return usage("--run-dir is too long");

  signal(SIGPIPE, SIG_IGN);
  hold = getenv("QWEX_SHIM_TEST_STOP_BEFORE_GO") != NULL && strcmp(getenv("QWEX_SHIM_TEST_STOP_BEFORE_GO"), "1") == 0;
  unsetenv("QWEX_SHIM_TEST_STOP_BEFORE_GO");
  shim_pid = getpid();
  fsync_enabled = getenv("QWEX_FSYNC") == NULL || strcmp(getenv("QWEX_FSYNC"), "0") != 0;

  /* Held until the command runs: a signal in between is forwarded once it does. */
  block_handled(SIG_BLOCK);
#ifdef __linux__
  subreaper = prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0; /* else an orphan outside the group is out of reach */
#endif
  if (make_pipe(wake_pipe, 1) < 0 || make_pipe(go, 0) < 0 || make_pipe(exec_err, 0) < 0) {
    e = errno;
    report("failed", e, 1);
    return EXIT_FAILED;
  }
  child_pid = fork();
  if (child_pid < 0) {
    e = errno;
    report("failed", e, 1);
    return EXIT_FAILED;
  }
  if (child_pid == 0) run_child(go[0], exec_err[1], command);

  close(go[0]);
  close(exec_err[1]);
  setpgid(child_pid, child_pid); /* the child does it too; whoever is first wins the race harmlessly */
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_signal;
  handled_set(&sa.sa_mask);
  sa.sa_flags = SA_RESTART | SA_NOCLDSTOP;
  for (i = 0; i < (int)HANDLED_COUNT; i++) sigaction(handled_signals[i], &sa, NULL);

  /* b. shim.json, complete and durable before the command may run. */
  if (start_time(shim_pid, shim_start, sizeof shim_start) == 0 && start_time(child_pid, child_start, sizeof child_start) == 0)
    len = (size_t)snprintf(json, sizeof json, "{\"shimPid\":%ld,\"shimStartTime\":\"%s\",\"pid\":%ld,\"pgid\":%ld,\"startTime\":\"%s\"}\n",
                           (long)shim_pid, shim_start, (long)child_pid, (long)child_pid, child_start);
  else
    len = (size_t)snprintf(json, sizeof json, "{\"shimPid\":%ld,\"pid\":%ld,\"pgid\":%ld}\n", (long)shim_pid, (long)child_pid, (long)child_pid);
  do fd = open(shim_json, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  while (fd < 0 && errno == EINTR);
  if (fd < 0) {
    e = errno;
    abandon_child(go[1]);
    if (e == EEXIST) {
      report("exists", 0, 0);
      return EXIT_EXISTS;
    }
    say("qwex-shim: cannot create %s: %s\n", shim_json, strerror(e));
    report("failed", e, 1);
    return EXIT_FAILED;
  }
  do n = write(fd, json, len); /* one call: a reader sees all of it or a torn file, never a mix of two */
  while (n < 0 && errno == EINTR);
  e = n < 0 ? errno : (size_t)n != len ? ENOSPC : 0;
  if (e == 0 && fsync_file(fd) < 0) e = errno;
  if (close(fd) < 0 && errno != EINTR && e == 0) e = errno;
  if (e == 0 && fsync_dir(run_dir) < 0) e = errno;
  if (e != 0) {
    unlink(shim_json);
    abandon_child(go[1]);
    say("qwex-shim: cannot write %s: %s\n", shim_json, strerror(e));
    report("failed", e, 1);
    return EXIT_FAILED;
  }
  if (hold) raise(SIGSTOP);

  /* c. Release the child; the close-on-exec pipe says whether exec worked. */
  do n = write(go[1], "g", 1);
  while (n < 0 && errno == EINTR);
  close(go[1]); /* n < 0 (EPIPE): the child was killed from outside; waitpid says how */
  {
    int exec_errno = 0;
    size_t got = 0;
    char *p = (char *)&exec_errno;
    for (;;) {
      n = read(exec_err[0], p + got, sizeof exec_errno - got);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) break;
      got += (size_t)n;
      if (got == sizeof exec_errno) break;
    }
    close(exec_err[0]);
    if (got > 0) {
      if (got != sizeof exec_errno) exec_errno = EIO;
      while (waitpid(child_pid, &status, 0) < 0 && errno == EINTR) {
      }
      block_handled(SIG_BLOCK);
      write_exit(1, exec_errno == ENOENT ? 127 : 126, 0, 0, 1, exec_errno, 0);
      report("failed", exec_errno, 1);
      return 0;
    }
  }
  report("started", (long)child_pid, 1);

  /* f. Wait for the command, forwarding signals to its whole tree. */
  block_handled(SIG_UNBLOCK);
  for (;;) {
    if (got_usr1) {
      got_usr1 = 0;
      kill_now = 1;
      signal_tree(SIGKILL);
    }
    if (got_term) {
      got_term = 0;
      signal_tree(SIGTERM);
    }
    if (got_int) {
      got_int = 0;
      signal_tree(SIGINT);
    }
    if (got_hup) {
      got_hup = 0;
      signal_tree(SIGHUP);
    }
    if (got_quit) {
      got_quit = 0;
      signal_tree(SIGQUIT);
    }
    if (reap(&status)) break;
    wait_for_wake(-1);
  }

  /* g. What the command left behind is stopped; h. then the status is written. */
  {
    long leftovers = stop_leftovers(child_pid, kill_now);
    block_handled(SIG_BLOCK);
    if (WIFSIGNALED(status)) write_exit(0, 0, 1, WTERMSIG(status), 0, 0, leftovers);
    else write_exit(1, WEXITSTATUS(status), 0, 0, 0, 0, leftovers);
  }
  return 0;
}
