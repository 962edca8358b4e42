/* SPDX-License-Identifier: MIT */
/*
 * replay_main.c: a main() for a libFuzzer target built without libFuzzer,
 * so make test-fuzz needs no clang. Runs LLVMFuzzerTestOneInput on every
 * file of the directories given, each in a child process so that one
 * crash (a sanitizer report, an abort) is counted and the rest still run.
 * Prints "replay: N passed, M failed"; exits 1 if any failed.
 */
#include <sys/stat.h>
#include <sys/wait.h>

#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int
replay_file(const char *path)
{
	FILE *f = fopen(path, "rb");
	uint8_t *buf = NULL, *exact;
	size_t n = 0, cap = 0, got;

	if (f == NULL)
		return -1;
	do {
		if (n == cap) {
			cap = cap ? cap * 2 : 4096;
			buf = realloc(buf, cap);
			if (buf == NULL)
				abort();
		}
		got = fread(buf + n, 1, cap - n, f);
		n += got;
	} while (got > 0);
	fclose(f);
	/* Exact size, so ASan catches a read one past the input. */
	exact = malloc(n ? n : 1);
	memcpy(exact, buf, n);
	free(buf);
	LLVMFuzzerTestOneInput(exact, n);
	free(exact);
	return 0;
}

/* Run one file in a child; 1 if it passed. */
static int
replay_child(const char *path)
{
	int status;
	pid_t pid = fork();

	if (pid < 0) {
		perror("fork");
		return 0;
	}
	if (pid == 0)
		_exit(replay_file(path) == 0 ? 0 : 2);
	if (waitpid(pid, &status, 0) < 0)
		return 0;
	return WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

int
main(int argc, char **argv)
{
	int pass = 0, fail = 0;

	for (int i = 1; i < argc; i++) {
		DIR *dir = opendir(argv[i]);
		struct dirent *de;

		if (dir == NULL) {
			perror(argv[i]);
			fail++;
			continue;
		}
		while ((de = readdir(dir)) != NULL) {
			char path[4096];
			struct stat st;

			snprintf(path, sizeof(path), "%s/%s", argv[i],
			    de->d_name);
			if (stat(path, &st) != 0 || !S_ISREG(st.st_mode))
				continue;
			if (replay_child(path)) {
				pass++;
			} else {
				fail++;
				fprintf(stderr, "replay: FAILED %s\n", path);
			}
		}
		closedir(dir);
	}
	printf("replay: %d passed, %d failed\n", pass, fail);
	return fail == 0 ? 0 : 1;
}
