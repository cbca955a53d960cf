/* Run a fuzz target over files without libFuzzer (gcc builds, and the
 * regression inputs in make check): every argument is a file or a
 * directory of files, each fed to LLVMFuzzerTestOneInput once. */
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "common/util.h"

int LLVMFuzzerTestOneInput (const uint8_t *data, size_t size);

static int
run_file (const char *path)
{
  size_t len;
  char *data = read_file (path, 256 << 20, &len);

  if (data == NULL) {
    perror (path);
    return -1;
  }
  LLVMFuzzerTestOneInput ((const uint8_t *) data, len);
  free (data);
  return 0;
}

int
main (int argc, char **argv)
{
  int n = 0;

  for (int i = 1; i < argc; i++) {
    struct stat st;
    if (stat (argv[i], &st) == -1) {
      perror (argv[i]);
      return 1;
    }
    if (S_ISDIR (st.st_mode)) {
      DIR *d = opendir (argv[i]);
      struct dirent *e;
      while (d && (e = readdir (d)) != NULL) {
        char *p;
        if (e->d_name[0] == '.'
            || asprintf (&p, "%s/%s", argv[i], e->d_name) == -1)
          continue;
        if (run_file (p) == -1)
          return 1;
        free (p);
        n++;
      }
      if (d)
        closedir (d);
    }
    else if (run_file (argv[i]) == -1)
      return 1;
    else
      n++;
  }
  printf ("%s: %d inputs ran\n", argv[0], n);
  return 0;
}
