/* demo.c — `koalascope demo`: the main job on the embedded koala-mini model, end to end —
 * chat in the Koala template, record its internals on the probe prompts, sweep probes for the
 * planted feature, audit the planted pronoun rates, and write one report that links them
 * (then open the viewer when there is a display).
 *
 * Each step runs this same program as a child process with the arguments a user would type
 * (printed before it runs), so the demo exercises exactly the commands it shows, a failing step
 * stops the demo with its own error message, and the steps' memory is returned between them. */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cli.h"

static const char *help_demo =
    "Usage: koalascope demo [--model DIR] [-o OUT_DIR] [--no-view] [--threads N]\n"
    "The main job on koala-mini, the small chat model shipped in models/koala-mini (trained\n"
    "by koalascope itself, with planted ground truth: docs/KOALA_MINI.md):\n"
    "  1. chat: a question answered in the Koala template\n"
    "  2. record: residual stream and attention maps on the probe prompts -> OUT/probe.h5\n"
    "  3. probe: a linear probe per layer for the planted colour-class feature\n"
    "  4. audit: the planted occupation-pronoun rates, measured with confidence intervals\n"
    "  5. report: OUT/REPORT.md linking everything; the viewer opens on OUT/probe.h5 when a\n"
    "     display is available (--no-view: never)\n"
    "  --model DIR   another koala-mini directory (default: models/koala-mini of the source\n"
    "                tree this program was built in, or $KS_DEMO_MODEL)\n"
    "  -o OUT_DIR    where the results go (default: koalascope-demo); a previous demo's\n"
    "                results there are replaced, any other existing content is refused\n";

#define MARKER ".koalascope-demo"

static bool is_dir(const char *p) {
    struct stat st;
    return stat(p, &st) == 0 && S_ISDIR(st.st_mode);
}

static bool is_file(const char *p) {
    struct stat st;
    return stat(p, &st) == 0 && S_ISREG(st.st_mode);
}

/* models/koala-mini beside the source tree of this executable (build/cli/koalascope or an
 * installed bin/koalascope with share/koalascope/models) */
static bool find_model(const char *self, char *out, size_t cap) {
    const char *env = getenv("KS_DEMO_MODEL");
    if (env && *env) {
        snprintf(out, cap, "%s", env);
        return true;
    }
    char dir[PATH_MAX];
    snprintf(dir, sizeof dir, "%s", self);
    char *slash = strrchr(dir, '/');
    if (!slash) return false;
    *slash = 0;
    static const char *const rel[] = {"/../../models/koala-mini", "/../models/koala-mini",
                                      "/../share/koalascope/models/koala-mini", NULL};
    for (int i = 0; rel[i]; i++) {
        char p[PATH_MAX + 64];
        snprintf(p, sizeof p, "%s%s", dir, rel[i]);
        char cfg[PATH_MAX + 80];
        snprintf(cfg, sizeof cfg, "%s/config.json", p);
        if (is_file(cfg) && realpath(p, out)) return true;
    }
    return false;
}

/* Run `self args...` and wait; its output goes where ours goes. */
static int step(const char *self, const char *title, char *const *args) {
    fprintf(stderr, "\n== %s\n$ koalascope", title);
    for (int i = 1; args[i]; i++)
        fprintf(stderr, strpbrk(args[i], " *?'\"") ? " '%s'" : " %s", args[i]);
    fputc('\n', stderr);
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid < 0) return cli_error("demo", "cannot start a step: %s", strerror(errno));
    if (pid == 0) {
        execv(self, args);
        fprintf(stderr, "koalascope demo: cannot run %s: %s\n", self, strerror(errno));
        _exit(127);
    }
    int status = 0;
    while (waitpid(pid, &status, 0) < 0)
        if (errno != EINTR) return cli_error("demo", "waiting for a step: %s", strerror(errno));
    if (WIFEXITED(status) && WEXITSTATUS(status) == 0) return 0;
    return cli_error("demo", "step '%s' failed (%s %d); its message is above", title,
                     WIFEXITED(status) ? "exit status" : "signal",
                     WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status));
}

/* Remove a previous demo's output directory (recognised by its marker). */
static int clear_out(const char *out) {
    char marker[PATH_MAX + 32];
    snprintf(marker, sizeof marker, "%s/" MARKER, out);
    if (!is_dir(out)) return 0;
    if (!is_file(marker))
        return cli_error("demo", "%s exists and is not a koalascope demo's output; choose "
                         "another with -o", out);
    pid_t pid = fork();
    if (pid == 0) {
        execlp("rm", "rm", "-rf", "--", out, (char *)NULL);
        _exit(127);
    }
    int status = 0;
    if (pid < 0 || waitpid(pid, &status, 0) < 0 || !WIFEXITED(status) || WEXITSTATUS(status))
        return cli_error("demo", "cannot remove the previous demo's %s", out);
    return 0;
}

int cmd_demo(int argc, char **argv) {
    static const struct option opts[] = {{"model", required_argument, 0, 'm'},
                                         {"output", required_argument, 0, 'o'},
                                         {"no-view", no_argument, 0, 'n'},
                                         {"threads", required_argument, 0, 't'},
                                         {"help", no_argument, 0, 'h'},
                                         {0, 0, 0, 0}};
    const char *model_arg = NULL, *out = "koalascope-demo", *threads = NULL;
    bool no_view = false;
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "m:o:h", opts, NULL)) != -1) {
        switch (c) {
        case 'm': model_arg = optarg; break;
        case 'o': out = optarg; break;
        case 'n': no_view = true; break;
        case 't': threads = optarg; break;
        case 'h': fputs(help_demo, stdout); return 0;
        default: return cli_usage("demo", "unknown or incomplete option (see --help)");
        }
    }
    if (optind < argc) return cli_usage("demo", "unexpected argument '%s'", argv[optind]);
    if (strlen(out) > 3000) return cli_usage("demo", "-o: the path is too long");
    char self[PATH_MAX];
    ssize_t sl = readlink("/proc/self/exe", self, sizeof self - 1);
    if (sl <= 0) return cli_error("demo", "cannot find this program (/proc/self/exe)");
    self[sl] = 0;
    char model[PATH_MAX];
    if (model_arg)
        snprintf(model, sizeof model, "%s", model_arg);
    else if (!find_model(self, model, sizeof model))
        return cli_error("demo", "koala-mini not found beside this program (models/koala-mini "
                         "of its source tree); give --model DIR or set KS_DEMO_MODEL");
    char p[PATH_MAX + 64];
    static const char *const need[] = {"config.json", "model.safetensors", "tokenizer.model",
                                       "probe_prompts.jsonl", "probe_labels.jsonl",
                                       "audit.json", NULL};
    for (int i = 0; need[i]; i++) {
        snprintf(p, sizeof p, "%s/%s", model, need[i]);
        if (!is_file(p))
            return cli_error("demo", "%s: missing %s (not a koala-mini directory?)", model,
                             need[i]);
    }
    if (clear_out(out)) return 1;
    if (mkdir(out, 0777) != 0 && errno != EEXIST)
        return cli_error("demo", "%s: cannot create: %s", out, strerror(errno));
    snprintf(p, sizeof p, "%s/" MARKER, out);
    FILE *mk = fopen(p, "w");
    if (!mk) return cli_error("demo", "%s: cannot write: %s", p, strerror(errno));
    fputs("written by koalascope demo; the next demo with this -o replaces this directory\n", mk);
    fclose(mk);

    char prompts[PATH_MAX + 64], labels[PATH_MAX + 64], spec[PATH_MAX + 64];
    char dump[PATH_MAX + 64], probe[PATH_MAX + 64], audit[PATH_MAX + 64], chat[PATH_MAX + 64];
    snprintf(prompts, sizeof prompts, "%s/probe_prompts.jsonl", model);
    snprintf(labels, sizeof labels, "%s/probe_labels.jsonl", model);
    snprintf(spec, sizeof spec, "%s/audit.json", model);
    snprintf(dump, sizeof dump, "%s/probe.h5", out);
    snprintf(probe, sizeof probe, "%s/probe_results.h5", out);
    snprintf(audit, sizeof audit, "%s/audit", out);
    snprintf(chat, sizeof chat, "%s/chat.txt", out);
    /* --threads N only when given (each command defaults to all cores) */
    char *th_flag = threads ? "--threads" : NULL, *th = (char *)threads;
    char *const q = "Can you tell me a story about a dog?";

    /* 1. chat: the answer also goes to OUT/chat.txt for the report */
    {
        fprintf(stderr, "\n== 1/4 chat: koala-mini answers in the Koala template\n");
        char *args[] = {self, "generate", model, "--template", "koala", "--prompt", q,
                        "-n", "80", th_flag, th, NULL};
        fflush(stdout);
        int saved = dup(STDOUT_FILENO);
        FILE *cf = fopen(chat, "w");
        if (!cf || saved < 0) return cli_error("demo", "%s: cannot write", chat);
        dup2(fileno(cf), STDOUT_FILENO);
        int rc = step(self, "generate", args);
        fflush(stdout);
        dup2(saved, STDOUT_FILENO);
        close(saved);
        fclose(cf);
        if (rc) return rc;
        char *ans = cli_slurp(chat);
        printf("USER: %s\nGPT: %s\n", q, ans ? ans : "");
        free(ans);
    }
    /* 2. record */
    {
        char *args[] = {self, "record", model, "--prompts", prompts, "--template", "koala",
                        "--hooks",
                        "hook_embed,blocks.*.hook_resid_post,blocks.*.attn.hook_pattern",
                        "-o", dump, "--overwrite", th_flag, th, NULL};
        if (step(self, "2/4 record: residual stream and attention maps of the probe prompts",
                 args))
            return 1;
    }
    /* 3. probe */
    {
        char *args[] = {self, "probe", dump, "--labels", labels, "--hook",
                        "hook_embed,blocks.*.hook_resid_post", "-o", probe, "--overwrite",
                        "--quiet", NULL};
        if (step(self, "3/4 probe: where the planted colour class is decodable", args))
            return 1;
    }
    /* 4. audit */
    {
        char *args[] = {self, "audit", spec, "-o", audit, "--quiet", th_flag, th, NULL};
        if (step(self, "4/4 audit: the planted occupation-pronoun rates", args)) return 1;
    }
    /* 5. report */
    char rep[PATH_MAX + 64];
    snprintf(rep, sizeof rep, "%s/REPORT.md", out);
    FILE *f = fopen(rep, "w");
    if (!f) return cli_error("demo", "%s: cannot write: %s", rep, strerror(errno));
    char *ans = cli_slurp(chat);
    const char *a = ans ? ans : "";
    while (*a == ' ' || *a == '\n') a++;
    fprintf(f, "# koalascope demo on koala-mini\n\nModel: `%s` (planted facts: its MODEL_CARD.md "
               "and planted.json; docs/KOALA_MINI.md).\n\n## 1. Chat (Koala template)\n\n"
               "USER: %s\n\nGPT: %s\n\n## 2. Recording\n\n`probe.h5`: `hook_embed`, every "
               "layer's `hook_resid_post` and attention pattern on the probe prompts "
               "(`koalascope dump-info probe.h5`, `koalascope view probe.h5`).\n\n"
               "## 3. Probe sweep\n\nA linear probe per layer for the planted colour class, "
               "against its controls: ![probe](probe_results.png)\n\nNumbers: "
               "`probe_results.csv`.\n\n## 4. Audit\n\nThe planted P(she) per occupation "
               "against what the audit measures (share_term, with bootstrap CIs): "
               "![audit](audit/charts/pronouns.png)\n\nFull report: [audit/report.md]"
               "(audit/report.md).\n",
            model, q, a);
    free(ans);
    if (fclose(f) != 0) return cli_error("demo", "%s: cannot write", rep);
    printf("\nkoalascope demo: the report is %s\n", rep);
    const char *disp = getenv("DISPLAY"), *way = getenv("WAYLAND_DISPLAY");
    if (!no_view && ((disp && *disp) || (way && *way))) {
        char *args[] = {self, "view", dump, NULL};
        return step(self, "the viewer on probe.h5", args);
    }
    if (!no_view) printf("(no display: open it later with  koalascope view %s)\n", dump);
    return 0;
}
