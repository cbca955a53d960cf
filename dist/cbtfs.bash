# bash completion for cbtfs: commands, each command's long options (and
# those every command takes: --config and the object store's), file
# names for the options that take a file, directories for STORE and
# MOUNTPOINT, and the tree's paths and snapshot uuids for restore's and
# serve's POINT (of a directory store only).  Stands alone (no bash-completion helpers needed); `make
# install` puts it where bash-completion loads it on first use.

# The object store's options, which every command takes anywhere on its
# command line, also before COMMAND (cli/s3.c).
_cbtfs_s3="--s3-endpoint= --s3-region= --s3-access-key= --s3-secret-file= \
--s3-ca-file= --s3-path-style --s3-allow-http --cache= --cache-size= \
--encrypt-key-file="

# The long options of COMMAND ($1); those that take a value end in "=".
_cbtfs_options ()
{
    local server="--server= --user= --password-file= --ca-file= --timeout="
    local common="--config= --help $_cbtfs_s3" own
    case $1 in
        backup) own="$server --vm= --exclude-disk= --jobs= --nbd-connections=
                      --limit-rate= --lock-wait= --no-copy --verify --json
                      --metrics-file= --quiet --verbose" ;;
        mount) own="$server --foreground --verbose --debug" ;;
        ls) own="--json" ;;
        fetch) own="$server --keep-data --nbd-connections= --quiet --verbose" ;;
        verify) own="$server --accept= --quiet --verbose" ;;
        prune) own="$server --keep-last= --keep-hourly= --keep-daily=
                     --keep-weekly= --keep-monthly= --keep-yearly=
                     --keep-within= --vm= --include-incomplete --dry-run
                     --json --lock-wait= --quiet --verbose" ;;
        forget) own="$server --vm= --disk= --yes --json --lock-wait= --quiet
                      --verbose" ;;
        serve) own="$server --listen= --unix= --tls-certificates= --pidfile=" ;;
        restore) own="$server --sr= --vdi= --name= --json --quiet --verbose" ;;
        copy) own="--keep-extra --lock-wait= --dst-encrypt-key-file= --json
                   --quiet --verbose" ;;
        *) return ;;
    esac
    # Unquoted: on one line, one space apart, so that callers can match
    # " --opt= " for any option, also one that ends a line above.
    echo $own $common
}

# The word $1 as the command will see it, into _cbtfs_word: quotes
# around it and backslashes in it removed, a leading ~/ expanded.  (A
# word opened with a quote is taken to its end: what bash passes while
# the quote is still open.)
_cbtfs_dequote ()
{
    local s=$1
    case $s in
        \'*) s=${s#\'} s=${s%\'} ;;
        \"*) s=${s#\"} s=${s%\"} ;;
        *) s=${s//\\\\/$'\1'} s=${s//\\/} s=${s//$'\1'/\\} ;;
    esac
    [[ $s == "~/"* ]] && s=$HOME/${s:2}
    _cbtfs_word=$s
}

# A JSON string's contents $1 as text, into _cbtfs_word: cbtfs escapes
# only " and \ in names (catalog_safe_name leaves no control characters).
_cbtfs_unjson ()
{
    local s=${1//\\\\/$'\1'}
    s=${s//\\\"/\"}
    _cbtfs_word=${s//$'\1'/\\}
}

# The points of the store in directory $1, one a line, as a POINT
# argument may name them: by-vm/VM/DISK/TIME.img, by-vm/VM/DISK/latest,
# by-uuid/DISK/SNAPSHOT.img and SNAPSHOT (uuid), from `$2 ls --json`.
# Only for a directory holding a cbtfs-store file, and within 2 s: an
# object store (s3://) is never listed, as each listing costs requests,
# and a store on a slow or hung filesystem costs at most the timeout.
# cbtfs writes one disk, and one point, a line.
_cbtfs_points ()
{
    local str='"((\\.|[^"\\])*)"' line vm= disk= uuid= snap name
    local disk_re='^  \{"uuid": "([0-9a-f-]+)", "vm_uuid": "[^"]*", "vm": '
    disk_re+="$str"', "vm_name_label": '"$str"', "name": '"$str"
    local point_re='^    \{"snapshot": "([0-9a-f-]+)", "name": '"$str"

    [ -d "$1" ] && [ -f "$1/cbtfs-store" ] || return
    while IFS= read -r line; do
        if [[ $line =~ $disk_re ]]; then
            uuid=${BASH_REMATCH[1]}
            _cbtfs_unjson "${BASH_REMATCH[2]}"; vm=$_cbtfs_word
            _cbtfs_unjson "${BASH_REMATCH[6]}"; disk=$_cbtfs_word
            printf '%s\n' "by-vm/$vm/$disk/latest"
        elif [[ $line =~ $point_re ]] && [ -n "$uuid" ]; then
            snap=${BASH_REMATCH[1]}
            _cbtfs_unjson "${BASH_REMATCH[2]}"; name=$_cbtfs_word
            printf '%s\n' "by-vm/$vm/$disk/$name.img" \
                "by-uuid/$uuid/$snap.img" "$snap"
        fi
    done < <(timeout 2 "$2" ls "$1" --json 2>/dev/null)
}

# COMPREPLY: the points of store $1 (as typed) that complete $2 (as
# typed), a folder at a time like file names (by-vm/ first, then
# by-vm/VM/, …), quoted for the command line (a name with spaces comes
# back as my\ vm).  $3 is the command, to list the store with.
_cbtfs_complete_point ()
{
    local store want p rest
    local -A seen=()
    _cbtfs_dequote "$1"; store=$_cbtfs_word
    _cbtfs_dequote "$2"; want=$_cbtfs_word
    _cbtfs_dequote "$3"
    while IFS= read -r p; do
        [[ $p == "$want"* ]] || continue
        rest=${p:${#want}}
        [[ $rest == */* ]] && p=$want${rest%%/*}/
        [ -n "${seen[$p]-}" ] && continue
        seen[$p]=1
        printf -v p '%q' "$p"
        COMPREPLY+=("$p")
    done < <(_cbtfs_points "$store" "$_cbtfs_word")
    compopt -o nospace 2>/dev/null
    # A whole point is complete: a space after it; a folder goes on.
    if [ ${#COMPREPLY[@]} -eq 1 ] && [[ ${COMPREPLY[0]} != */ ]]; then
        COMPREPLY[0]+=' '
    fi
}

_cbtfs ()
{
    local cur=${COMP_WORDS[COMP_CWORD]} prev=${COMP_WORDS[COMP_CWORD-1]}
    local first=1 cmd i opt nargs=0 store=0
    COMPREPLY=()

    # COMMAND is the first word that is not an object store option or
    # its value (--s3-endpoint URL, --s3-endpoint=URL).  bash splits
    # words at "=" and ":" too (COMP_WORDBREAKS): https://h:9000 is the
    # words "https" ":" "//h" ":" "9000".
    while [ "$first" -lt "$COMP_CWORD" ]; do
        case " $_cbtfs_s3 " in
            *" ${COMP_WORDS[first]} "*) first=$((first + 1)) ;;
            *" ${COMP_WORDS[first]}= "*)
                first=$((first + 2))
                [ "${COMP_WORDS[first-1]}" != "=" ] || first=$((first + 1))
                while [ "${COMP_WORDS[first]-}" = ":" ]; do
                    first=$((first + 2))
                done ;;
            *) break ;;
        esac
    done
    cmd=${COMP_WORDS[first]-}

    if [ "$COMP_CWORD" -eq "$first" ]; then
        mapfile -t COMPREPLY < <(compgen -W "backup mount ls fetch verify
            prune forget serve restore copy --help --version" -- "$cur")
        return
    fi
    # --opt=VALUE: bash splits it at "=" (COMP_WORDBREAKS), --opt VALUE not.
    if [ "$cur" = "=" ]; then
        opt=$prev cur=''
    elif [ "$prev" = "=" ]; then
        opt=${COMP_WORDS[COMP_CWORD-2]}
    elif [[ $prev == --* ]] && [[ " $(_cbtfs_options "$cmd") $_cbtfs_s3 " == *" $prev= "* ]]; then
        opt=$prev
    fi
    if [ -n "${opt-}" ]; then
        case $opt in
            --password-file|--ca-file|--config|--pidfile|--unix|\
            --metrics-file|--s3-secret-file|--s3-ca-file|\
            --encrypt-key-file|--dst-encrypt-key-file)
                compopt -o filenames 2>/dev/null
                mapfile -t COMPREPLY < <(compgen -f -- "$cur") ;;
            --tls-certificates|--cache)
                compopt -o filenames 2>/dev/null
                mapfile -t COMPREPLY < <(compgen -d -- "$cur") ;;
        esac
        return
    fi
    if [[ $cur == -* ]]; then
        compopt -o nospace 2>/dev/null
        mapfile -t COMPREPLY < <(compgen -W "$(_cbtfs_options "$cmd")" -- "$cur")
        # An option that takes no value is complete: a space after it.
        if [ ${#COMPREPLY[@]} -eq 1 ] && [[ ${COMPREPLY[0]} != *= ]]; then
            COMPREPLY[0]+=' '
        fi
        return
    fi
    # Arguments: STORE (and mount's MOUNTPOINT) are directories.
    for ((i = first + 1; i < COMP_CWORD; i++)); do
        [[ ${COMP_WORDS[i]} == -* || ${COMP_WORDS[i]} == = ]] && continue
        [[ ${COMP_WORDS[i-1]} == = ]] && continue
        # The rest of a word split at ":" (s3://BUCKET, https://HOST).
        [[ ${COMP_WORDS[i]} == : || ${COMP_WORDS[i-1]} == : ]] && continue
        [[ ${COMP_WORDS[i-1]} == --* ]] &&
            [[ " $(_cbtfs_options "$cmd") " == *" ${COMP_WORDS[i-1]}= "* ]] && continue
        nargs=$((nargs + 1))
        [ $nargs -eq 1 ] && store=$i
    done
    if [ $nargs -eq 0 ] || { [ "$cmd" = mount ] && [ $nargs -eq 1 ]; }; then
        compopt -o filenames 2>/dev/null
        mapfile -t COMPREPLY < <(compgen -d -- "$cur")
    # restore's POINT, serve's POINTs: in a directory store only (a
    # STORE followed by ":" is s3://BUCKET or another URL).
    elif { [ "$cmd" = restore ] && [ $nargs -eq 1 ]; } ||
         { [ "$cmd" = serve ] && [ $nargs -ge 1 ]; }; then
        [ "${COMP_WORDS[store+1]-}" = ":" ] ||
            _cbtfs_complete_point "${COMP_WORDS[store]}" "$cur" \
                "${COMP_WORDS[0]}"
    fi
}
complete -F _cbtfs cbtfs
