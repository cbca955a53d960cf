/* cbtfs: the options every XAPI-using command shares. */
#include <errno.h>
#include <stdlib.h>

#include "../common/error.h"
#include "../common/log.h"
#include "../xapi/api.h"
#include "cli.h"

int
cli_check_server (const struct engine_creds *creds)
{
  xapi_session *xs = engine_login (creds);

  if (xs) {
    xapi_logout (xs);
    return 0;
  }
  if (errno == EACCES || errno == EINVAL || errno == ENOENT)
    return -1;
  log_warn ("%s; blocks not in the store will fail with EIO until the host "
            "can be reached", err_get ());
  return 0;
}

int
cli_server_option (struct engine_server *so, int c, const char *arg)
{
  char *end;

  switch (c) {
  case 's': so->server = arg; return 1;
  case 'u': so->user = arg; return 1;
  case 'p': so->password_file = arg; return 1;
  case 'c': so->ca_file = arg; return 1;
  case 't':
    so->timeout = strtol (arg, &end, 10);
    if (*end || end == arg || so->timeout < 1) {
      cli_refuse ("--timeout must be a positive number of seconds");
      return -1;
    }
    return 1;
  default:
    return 0;
  }
}
