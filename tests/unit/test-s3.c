/* cbtfs unit test of the S3 client's pure parts: how an object is cut
 * into parts, the CompleteMultipartUpload body, and the answers about
 * multipart uploads parsed (s3/s3.h, s3/s3-xml.h).  No network. */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/error.h"
#include "s3/s3-xml.h"
#include "s3/s3.h"
#include "check.h"

#define MiB ((size_t) 1 << 20)

static void
parts (void)
{
  /* Up to the part size: one PUT. */
  CHECK (s3_part_size (0, 5 * MiB) == 0);
  CHECK (s3_part_size (5 * MiB, 5 * MiB) == 0);
  CHECK (s3_part_size (5 * MiB + 1, 5 * MiB) == 5 * MiB);
  CHECK (s3_part_size (64 * MiB, 0) == 0);
  /* At most 10000 parts: 100 GiB in 5 MiB parts needs 11 MiB ones. */
  CHECK (s3_part_size ((uint64_t) 100 << 30, 5 * MiB) == 11 * MiB);
  CHECK (s3_part_size ((uint64_t) 10000 * 5 * MiB, 5 * MiB) == 5 * MiB);
  CHECK (s3_part_size ((uint64_t) 10000 * 5 * MiB + 1, 5 * MiB) == 6 * MiB);
}

static void
complete_body (void)
{
  char *etags[] = { "\"0a1b\"", "\"x&<y>\"" };
  char *b = s3_xml_complete (etags, 2);

  CHECK (b != NULL);
  CHECK (strcmp (b, "<CompleteMultipartUpload>"
                 "<Part><PartNumber>1</PartNumber><ETag>&quot;0a1b&quot;"
                 "</ETag></Part>"
                 "<Part><PartNumber>2</PartNumber><ETag>&quot;x&amp;&lt;y"
                 "&gt;&quot;</ETag></Part>"
                 "</CompleteMultipartUpload>") == 0);
  free (b);
}

static void
upload_id (void)
{
  static const char ok[] = "<?xml version=\"1.0\"?>"
    "<InitiateMultipartUploadResult xmlns=\"http://s3.amazonaws.com/doc/"
    "2006-03-01/\"><Bucket>b</Bucket><Key>k</Key><UploadId>2~abc</UploadId>"
    "</InitiateMultipartUploadResult>";
  static const char none[] = "<InitiateMultipartUploadResult><Key>k</Key>"
    "</InitiateMultipartUploadResult>";
  char *id = s3_xml_upload_id (ok, strlen (ok));

  CHECK (id && strcmp (id, "2~abc") == 0);
  free (id);
  errno = 0;
  CHECK (s3_xml_upload_id (none, strlen (none)) == NULL && errno == EPROTO);
  CHECK (s3_xml_upload_id ("<Error/>", 8) == NULL && errno == EPROTO);
}

struct seen {
  int n;
  char keys[4][32], ids[4][32], when[4][40];
};

static int
seen (void *opaque, const char *key, const char *id, const char *initiated)
{
  struct seen *s = opaque;

  CHECK (s->n < 4);
  snprintf (s->keys[s->n], 32, "%s", key);
  snprintf (s->ids[s->n], 32, "%s", id);
  snprintf (s->when[s->n], 40, "%s", initiated);
  s->n++;
  return 0;
}

static void
uploads (void)
{
  static const char page[] = "<ListMultipartUploadsResult>"
    "<Bucket>b</Bucket><Prefix>p/</Prefix>"
    "<Upload><Key>p/a</Key><UploadId>1</UploadId>"
    "<Initiated>2026-12-03T21:51:42.123Z</Initiated></Upload>"
    "<Upload><Key>p/b</Key><UploadId>2</UploadId>"
    "<Initiated>2026-12-03T21:52:00.000Z</Initiated></Upload>"
    "<IsTruncated>true</IsTruncated><NextKeyMarker>p/b</NextKeyMarker>"
    "<NextUploadIdMarker>2</NextUploadIdMarker>"
    "</ListMultipartUploadsResult>";
  static const char last[] = "<ListMultipartUploadsResult>"
    "<IsTruncated>false</IsTruncated></ListMultipartUploadsResult>";
  static const char bad[] = "<ListMultipartUploadsResult>"
    "<Upload><Key>p/a</Key></Upload></ListMultipartUploadsResult>";
  static const char nomark[] = "<ListMultipartUploadsResult>"
    "<IsTruncated>true</IsTruncated></ListMultipartUploadsResult>";
  struct seen s = { 0 };
  char *k = NULL, *i = NULL;

  CHECK (s3_xml_uploads (page, strlen (page), seen, &s, &k, &i) == 0);
  CHECK (s.n == 2 && strcmp (s.keys[1], "p/b") == 0
         && strcmp (s.ids[0], "1") == 0
         && strcmp (s.when[0], "2026-12-03T21:51:42.123Z") == 0);
  CHECK (k && i && strcmp (k, "p/b") == 0 && strcmp (i, "2") == 0);
  free (k);
  free (i);
  memset (&s, 0, sizeof s);
  CHECK (s3_xml_uploads (last, strlen (last), seen, &s, &k, &i) == 0);
  CHECK (s.n == 0 && k == NULL && i == NULL);
  CHECK_FAILS (s3_xml_uploads (bad, strlen (bad), seen, &s, &k, &i), EPROTO,
               "without Key, UploadId or Initiated");
  CHECK_FAILS (s3_xml_uploads (nomark, strlen (nomark), seen, &s, &k, &i),
               EPROTO, "without a marker");
  CHECK (k == NULL && i == NULL);
  CHECK_FAILS (s3_xml_uploads ("<x/>", 4, seen, &s, &k, &i), EPROTO,
               "not a ListMultipartUploadsResult");
}

int
main (void)
{
  CHECK (s3_global_init () == 0);
  parts ();
  complete_body ();
  upload_id ();
  uploads ();
  printf ("test-s3: ok\n");
  return 0;
}
