/*
 * qwex-spawner: starts shims for qwexd, so that qwexd never forks itself.
 *
 *   qwex-spawner        (stdin: requests from qwexd; stdout: one line per event)
 *
 * Why: Node starts a child by forking its whole process (80 MB of page
 * tables and more for qwexd) and blocks its event loop until the child has
 * exec'd; with many short runs that was the largest single cost of qwexd. This
 * process is small, so its forks are cheap, and qwexd only writes a request
 * and reads a line. It starts nothing of its own: every request becomes a
 * shim (whose contract is at the top of qwex-shim.c). The shim is compiled
 * into this program as well (qwex-shim.c is included below, its main renamed),
 * so a request's child can run it without an exec: on a virtual machine an
 * exec costs about a millisecond of CPU (the loader's CPU feature probing
 * traps to the hypervisor), which was one of three per short run.
 *
 * Contract:
 * a. A request is a 4-byte length (little-endian, at most MAX_REQUEST) and
 *    that many bytes: NUL-terminated strings TAG, FILE, CWD, STDOUT, STDERR,
 *    ARGC (decimal), ARGC arguments (the first is argv[0]), then any number
 *    of environment entries ("NAME=value") up to the end. TAG is 1 to 64 of
 *    [A-Za-z0-9_-]. A malformed request ends the spawner (exit 2, a line on
 *    stderr): qwexd wrote it, so it is a bug, and a new spawner starts clean.
 * b. For each request it forks. The child: starts a new session, resets its
 *    signal mask and dispositions, opens STDIN /dev/null, STDOUT and STDERR
 *    (O_WRONLY|O_APPEND|O_CREAT, mode 0600) on 0, 1 and 2, puts a copy of the
 *    spawner's stdout on fd 3, closes everything else, changes to CWD and
 *    execs FILE with the arguments and exactly the environment given; an
 *    empty FILE runs the built-in shim instead (the same code as
 *    libexec/qwex-shim, with the arguments as its argv and exactly the
 *    environment given, the process named qwex-shim), and exits with its
 *    status. If any of that fails, nothing ran: it writes "TAG failed ERRNO"
 *    on fd 3 and exits 127. (qwex passes `--report-tag TAG` to the shim, which
 *    writes its own one line, "TAG started PID" and so on, on that fd 3.)
 * c. The spawner writes "TAG forked PID" once the child exists (the child's
 *    own line may come before it), or "TAG nofork ERRNO" when no process
 *    could be made (then that is the request's only line); and
 *    "reaped PID STATUS" (the raw wait status) for every child that ended.
 *    Every line is shorter than PIPE_BUF, so the lines of the spawner and of
 *    the shims sharing the pipe never mix.
 * d. On EOF on stdin (qwexd went away) it exits at once; its children, which
 *    are in their own sessions, go on and are re-parented. SIGPIPE is
 *    ignored in the spawner (not in its children); EINTR is handled.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>
#ifdef __linux__
#include <sys/syscall.h>
#endif

/* The shim, built in: its main becomes qwex_shim_main; its helpers (set_cloexec) serve the spawner too. */
#define main qwex_shim_main
#include "qwex-shim.c"
#undef main

#define MAX_REQUEST (4 * 1024 * 1024)
#define MAX_TAG 64
#define REPORT_FD 3

static int chld_pipe[2] = {-1, -1};
static int out_fd = STDOUT_FILENO;

static void on_chld(int sig) {
  int saved = errno;
  char byte = 0;
  (void)sig;
  if (write(chld_pipe[1], &byte, 1) < 0) {
    /* full: a wake-up is already there */
  }
  errno = saved;
}

/* One whole line; qwexd may be gone (EPIPE), which the next read of stdin tells. */
static void line(int fd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void line(int fd, const char *fmt, ...) {
  char buf[160];
  va_list ap;
  int n;
  ssize_t w;
  va_start(ap, fmt);
  n = vsnprintf(buf, sizeof buf, fmt, ap);
  va_end(ap);
  if (n <= 0 || (size_t)n >= sizeof buf) return;
  do w = write(fd, buf, (size_t)n);
  while (w < 0 && errno == EINTR);
}

static int valid_tag(const char *tag) {
  size_t i, n = strlen(tag);
  if (n == 0 || n > MAX_TAG) return 0;
  for (i = 0; i < n; i++) {
    char c = tag[i];
    if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' || c == '_')) return 0;
  }
  return 1;
}

/* Puts fd on target (which it may already be), clearing close-on-exec; -1 on failure. */
static int place(int fd, int target) {
  if (fd == target) {
    int flags = fcntl(fd, F_GETFD);
    return flags < 0 ? -1 : fcntl(fd, F_SETFD, flags & ~FD_CLOEXEC);
  }
  return dup2(fd, target) < 0 ? -1 : 0;
}

/* Moves fd above the standard ones and REPORT_FD (close-on-exec), so that placing one never clobbers another. */
static int lift(int fd) {
  int high;
  if (fd < 0) return -1;
  high = fcntl(fd, F_DUPFD_CLOEXEC, 10);
  close(fd);
  return high;
}

static void close_above(int last_kept) {
#if defined(__linux__) && defined(SYS_close_range)
  if (syscall(SYS_close_range, (unsigned)last_kept + 1, ~0U, 0) == 0) return;
#endif
  {
    int fd;
    long max = sysconf(_SC_OPEN_MAX);
    if (max < 0 || max > 65536) max = 65536;
    for (fd = last_kept + 1; fd < max; fd++) close(fd);
  }
}

/* The child of a request: never returns. */
static void child(const char *tag, const char *file, const char *cwd, const char *out, const char *err, char **argv, char **envp) {
  struct sigaction dfl;
  sigset_t empty;
  int sig, report, in_fd, o, e;

  report = fcntl(out_fd, F_DUPFD_CLOEXEC, 10);
  setsid();
  memset(&dfl, 0, sizeof dfl);
  dfl.sa_handler = SIG_DFL;
  sigemptyset(&dfl.sa_mask);
  for (sig = 1; sig < 65; sig++)
    if (sig != SIGKILL && sig != SIGSTOP) sigaction(sig, &dfl, NULL);
  sigemptyset(&empty);
  sigprocmask(SIG_SETMASK, &empty, NULL);

  in_fd = lift(open("/dev/null", O_RDONLY | O_CLOEXEC));
  o = lift(open(out, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600));
  e = o < 0 ? -1 : lift(open(err, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600));
  if (report < 0 || in_fd < 0 || o < 0 || e < 0) goto failed;
  if (place(in_fd, 0) < 0 || place(o, 1) < 0 || place(e, 2) < 0 || place(report, REPORT_FD) < 0) goto failed;
  report = REPORT_FD;
  close_above(REPORT_FD);
  if (chdir(cwd) < 0) goto failed;
  if (file[0] == '\0') {
    int argc = 0;
    while (argv[argc] != NULL) argc++;
    environ = envp;
#ifdef __linux__
    prctl(PR_SET_NAME, "qwex-shim", 0, 0, 0);
#endif
    exit(qwex_shim_main(argc, argv));
  }
  execve(file, argv, envp);
failed : {
  int why = errno;
  line(report >= 0 ? report : out_fd, "%s failed %d\n", tag, why);
  _exit(127);
}
}

/* Splits a request into its fields and forks its child. Returns 0, or -1 for a malformed request. */
static int handle(char *req, size_t len) {
  char *fields[6], **argv, **envp, *p = req, *end = req + len, *stop;
  long argc, envc = 0, i;
  pid_t pid;

  if (len == 0 || req[len - 1] != '\0') return -1;
  for (i = 0; i < 6; i++) {
    if (p >= end) return -1;
    fields[i] = p;
    p += strlen(p) + 1;
  }
  if (!valid_tag(fields[0])) return -1;
  argc = strtol(fields[5], &stop, 10);
  if (*stop != '\0' || stop == fields[5] || argc < 1 || argc > 1000000) return -1;
  argv = calloc((size_t)argc + 1, sizeof *argv);
  if (argv == NULL) return -1;
  for (i = 0; i < argc; i++) {
    if (p >= end) {
      free(argv);
      return -1;
    }
    argv[i] = p;
    p += strlen(p) + 1;
  }
  for (stop = p; stop < end; stop += strlen(stop) + 1) envc++;
  envp = calloc((size_t)envc + 1, sizeof *envp);
  if (envp == NULL) {
    free(argv);
    return -1;
  }
  for (i = 0; i < envc; i++) {
    envp[i] = p;
    p += strlen(p) + 1;
  }
  pid = fork();
  if (pid == 0) child(fields[0], fields[1], fields[2], fields[3], fields[4], argv, envp);
  if (pid < 0) line(out_fd, "%s nofork %d\n", fields[0], errno);
  else line(out_fd, "%s forked %ld\n", fields[0], (long)pid);
  free(argv);
  free(envp);
  return 0;
}

static void reap_all(void) {
  int status;
  pid_t pid;
  for (;;) {
    pid = waitpid(-1, &status, WNOHANG);
    if (pid < 0 && errno == EINTR) continue;
    if (pid <= 0) return;
    line(out_fd, "reaped %ld %d\n", (long)pid, status);
  }
}

int main(void) {
  struct sigaction sa;
  struct pollfd fds[2];
  char *buf = NULL, drain[64];
  size_t have = 0, cap = 0;
  ssize_t n;

  signal(SIGPIPE, SIG_IGN);
  if (pipe(chld_pipe) < 0 || set_cloexec(chld_pipe[0], 1) < 0 || set_cloexec(chld_pipe[1], 1) < 0) return 1;
  set_cloexec(STDIN_FILENO, 0);
  set_cloexec(STDOUT_FILENO, 0);
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_chld;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESTART | SA_NOCLDSTOP;
  sigaction(SIGCHLD, &sa, NULL);

  fds[0].fd = STDIN_FILENO;
  fds[0].events = POLLIN;
  fds[1].fd = chld_pipe[0];
  fds[1].events = POLLIN;
  for (;;) {
    if (poll(fds, 2, -1) < 0) {
      if (errno == EINTR) continue;
      return 1;
    }
    if (fds[1].revents) {
      while (read(chld_pipe[0], drain, sizeof drain) > 0) {
      }
      reap_all();
    }
    if (fds[0].revents) {
      if (cap - have < 65536) {
        size_t want = cap == 0 ? 65536 : cap * 2;
        char *grown;
        if (want > MAX_REQUEST + 65536 + 4) want = MAX_REQUEST + 65536 + 4;
        grown = realloc(buf, want);
        if (grown == NULL) return 1;
        buf = grown;
        cap = want;
      }
      n = read(STDIN_FILENO, buf + have, cap - have);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) return 0; /* qwexd went away */
      have += (size_t)n;
      for (;;) {
        uint32_t len;
        if (have < 4) break;
        len = (uint32_t)(unsigned char)buf[0] | (uint32_t)(unsigned char)buf[1] << 8 | (uint32_t)(unsigned char)buf[2] << 16 | (uint32_t)(unsigned char)buf[3] << 24;
        if (len > MAX_REQUEST) {
          fprintf(stderr, "qwex-spawner: a request of %lu bytes is over the limit\n", (unsigned long)len);
          return 2;
        }
        if (have < 4 + (size_t)len) break;
        if (handle(buf + 4, len) < 0) {
          fprintf(stderr, "qwex-spawner: malformed request\n");
          return 2;
        }
        memmove(buf, buf + 4 + len, have - 4 - len);
        have -= 4 + len;
      }
    }
  }
}
