/* cbtfs: S3's XML answers (see s3-xml.h). */
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libxml/parser.h>
#include <libxml/tree.h>

#include "../common/error.h"
#include "s3-xml.h"

/* Parse BODY without touching the network or entities: the server is
 * not trusted to be well-behaved. */
static xmlDoc *
parse (const char *body, size_t len)
{
  if (len > 0x7fffffff)
    return NULL;
  return xmlReadMemory (body, (int) len, "s3.xml", NULL,
                        XML_PARSE_NONET | XML_PARSE_NOBLANKS
                        | XML_PARSE_NOERROR | XML_PARSE_NOWARNING);
}

static bool
named (const xmlNode *n, const char *name)
{
  return n->type == XML_ELEMENT_NODE
    && strcmp ((const char *) n->name, name) == 0;
}

/* The text of PARENT's first child element NAME (caller frees), or NULL. */
static char *
child_text (const xmlNode *parent, const char *name)
{
  const xmlNode *n;
  xmlChar *t;
  char *s;

  for (n = parent->children; n; n = n->next)
    if (named (n, name)) {
      t = xmlNodeGetContent (n);
      if (t == NULL)
        return NULL;
      s = strdup ((const char *) t);
      xmlFree (t);
      return s;
    }
  return NULL;
}

void
s3_xml_error (const char *body, size_t len, char **code, char **message)
{
  xmlDoc *doc = parse (body, len);
  const xmlNode *root = doc ? xmlDocGetRootElement (doc) : NULL;

  *code = *message = NULL;
  if (root && named (root, "Error")) {
    *code = child_text (root, "Code");
    *message = child_text (root, "Message");
  }
  xmlFreeDoc (doc);
}

int
s3_xml_list (const char *body, size_t len, s3_list_fn fn, void *opaque,
             char **next)
{
  xmlDoc *doc = parse (body, len);
  const xmlNode *root = doc ? xmlDocGetRootElement (doc) : NULL;
  const xmlNode *n;
  char *key = NULL, *size = NULL, *trunc = NULL, *end;
  unsigned long long sz;
  int r = -1;

  *next = NULL;
  if (root == NULL || !named (root, "ListBucketResult")) {
    err_set (EPROTO, "malformed listing: not a ListBucketResult");
    goto out;
  }
  for (n = root->children; n; n = n->next) {
    if (!named (n, "Contents"))
      continue;
    key = child_text (n, "Key");
    size = child_text (n, "Size");
    if (key == NULL || size == NULL) {
      err_set (EPROTO, "malformed listing: an entry without Key or Size");
      goto out;
    }
    errno = 0;
    sz = strtoull (size, &end, 10);
    if (errno || end == size || *end) {
      err_set (EPROTO, "malformed listing: size of %s is not a number", key);
      goto out;
    }
    r = fn (opaque, key, sz);
    if (r != 0)
      goto out;
    r = -1;
    free (key);
    free (size);
    key = size = NULL;
  }
  trunc = child_text (root, "IsTruncated");
  if (trunc && strcmp (trunc, "true") == 0) {
    *next = child_text (root, "NextContinuationToken");
    if (*next == NULL || **next == '\0') {
      free (*next);
      *next = NULL;
      err_set (EPROTO, "malformed listing: truncated without a "
               "continuation token");
      goto out;
    }
  }
  r = 0;
 out:
  free (key);
  free (size);
  free (trunc);
  xmlFreeDoc (doc);
  return r;
}

/* S plus its length escaped for XML text, appended at OUT + *N (OUT has
 * room: 6 bytes per byte of S). */
static void
escape_text (char *out, size_t *n, const char *s)
{
  for (; *s; s++) {
    const char *e = *s == '&' ? "&amp;" : *s == '<' ? "&lt;"
      : *s == '>' ? "&gt;" : *s == '"' ? "&quot;" : NULL;
    if (e) {
      memcpy (out + *n, e, strlen (e));
      *n += strlen (e);
    }
    else
      out[(*n)++] = *s;
  }
}

/* HEAD, then for each of the N ITEMS: OPEN (with the item's number,
 * from 1, in place of its %zu when NUMBERED), the item escaped for XML
 * text, CLOSE; then TAIL.  malloc'd, or NULL with err_*. */
static char *
xml_items (const char *head, const char *open, bool numbered,
           const char *close, const char *tail, char *const *items, size_t n)
{
  size_t cap = strlen (head) + strlen (tail) + 1, len, i;
  char *out;

  for (i = 0; i < n; i++)
    cap += strlen (open) + 20 + strlen (close) + 6 * strlen (items[i]);
  out = malloc (cap);
  if (out == NULL) {
    err_set (ENOMEM, "out of memory");
    return NULL;
  }
  len = (size_t) snprintf (out, cap, "%s", head);
  for (i = 0; i < n; i++) {
    if (numbered)
      len += (size_t) snprintf (out + len, cap - len, open, i + 1);
    else
      len += (size_t) snprintf (out + len, cap - len, "%s", open);
    escape_text (out, &len, items[i]);
    len += (size_t) snprintf (out + len, cap - len, "%s", close);
  }
  snprintf (out + len, cap - len, "%s", tail);
  return out;
}

char *
s3_xml_complete (char *const *etags, size_t n)
{
  return xml_items ("<CompleteMultipartUpload>",
                    "<Part><PartNumber>%zu</PartNumber><ETag>", true,
                    "</ETag></Part>", "</CompleteMultipartUpload>", etags, n);
}

char *
s3_xml_delete (char *const *keys, size_t n)
{
  return xml_items ("<Delete><Quiet>true</Quiet>", "<Object><Key>", false,
                    "</Key></Object>", "</Delete>", keys, n);
}

int
s3_xml_delete_errors (const char *body, size_t len, char **key, char **code,
                      char **message)
{
  xmlDoc *doc = parse (body, len);
  const xmlNode *root = doc ? xmlDocGetRootElement (doc) : NULL, *n;
  int failed = 0;

  *key = *code = *message = NULL;
  if (root == NULL || !named (root, "DeleteResult")) {
    xmlFreeDoc (doc);
    return -1;
  }
  for (n = root->children; n; n = n->next) {
    if (!named (n, "Error"))
      continue;
    if (failed++ == 0) {
      *key = child_text (n, "Key");
      *code = child_text (n, "Code");
      *message = child_text (n, "Message");
    }
  }
  xmlFreeDoc (doc);
  return failed;
}

char *
s3_xml_upload_id (const char *body, size_t len)
{
  xmlDoc *doc = parse (body, len);
  const xmlNode *root = doc ? xmlDocGetRootElement (doc) : NULL;
  char *id = NULL;

  if (root && named (root, "InitiateMultipartUploadResult"))
    id = child_text (root, "UploadId");
  xmlFreeDoc (doc);
  if (id == NULL || *id == '\0') {
    free (id);
    err_set (EPROTO, "malformed answer: no UploadId");
    return NULL;
  }
  return id;
}

int
s3_xml_uploads (const char *body, size_t len, s3_xml_upload_fn fn,
                void *opaque, char **next_key, char **next_id)
{
  xmlDoc *doc = parse (body, len);
  const xmlNode *root = doc ? xmlDocGetRootElement (doc) : NULL;
  const xmlNode *n;
  char *key = NULL, *id = NULL, *init = NULL, *trunc = NULL;
  int r = -1;

  *next_key = *next_id = NULL;
  if (root == NULL || !named (root, "ListMultipartUploadsResult")) {
    err_set (EPROTO, "malformed listing: not a ListMultipartUploadsResult");
    goto out;
  }
  for (n = root->children; n; n = n->next) {
    if (!named (n, "Upload"))
      continue;
    key = child_text (n, "Key");
    id = child_text (n, "UploadId");
    init = child_text (n, "Initiated");
    if (key == NULL || id == NULL || init == NULL) {
      err_set (EPROTO, "malformed listing: an upload without Key, UploadId "
               "or Initiated");
      goto out;
    }
    r = fn (opaque, key, id, init);
    if (r != 0)
      goto out;
    r = -1;
    free (key);
    free (id);
    free (init);
    key = id = init = NULL;
  }
  trunc = child_text (root, "IsTruncated");
  if (trunc && strcmp (trunc, "true") == 0) {
    *next_key = child_text (root, "NextKeyMarker");
    *next_id = child_text (root, "NextUploadIdMarker");
    if (*next_key == NULL || **next_key == '\0' || *next_id == NULL) {
      free (*next_key);
      free (*next_id);
      *next_key = *next_id = NULL;
      err_set (EPROTO, "malformed listing: truncated without a marker");
      goto out;
    }
  }
  r = 0;
 out:
  free (key);
  free (id);
  free (init);
  free (trunc);
  xmlFreeDoc (doc);
  return r;
}
