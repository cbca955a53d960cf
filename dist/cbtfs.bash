# bash completion for cbtfs: commands, each command's long options (and
# those every command takes: --config and the object store's), file
# names for the options that take a file, directories for STORE and
# MOUNTPOINT.  Stands alone (no bash-completion helpers needed); `make
# install` puts it where bash-completion loads it on first use.

# The object store's options, which every command takes anywhere on its
# command line, also before COMMAND (cli/s3.c).
_cbtfs_s3="--s3-endpoint= --s3-region= --s3-access-key= --s3-secret-file= \
--s3-ca-file= --s3-path-style --s3-allow-http --cache= --cache-size="

# The long options of COMMAND ($1); those that take a value end in "=".
_cbtfs_options ()
{
    local server="--server= --user= --password-file= --ca-file= --timeout="
    local common="--config= --help $_cbtfs_s3" own
    case $1 in
        backup) own="$server --vm= --exclude-disk= --jobs= --nbd-connections=
                      --limit-rate= --lock-wait= --no-copy --verify --quiet
                      --verbose" ;;
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
        copy) own="--keep-extra --lock-wait= --json --quiet --verbose" ;;
        *) return ;;
    esac
    # Unquoted: on one line, one space apart, so that callers can match
    # " --opt= " for any option, also one that ends a line above.
    echo $own $common
}

_cbtfs ()
{
    local cur=${COMP_WORDS[COMP_CWORD]} prev=${COMP_WORDS[COMP_CWORD-1]}
    local first=1 cmd i opt nargs=0
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
            --s3-secret-file|--s3-ca-file)
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
    done
    if [ $nargs -eq 0 ] || { [ "$cmd" = mount ] && [ $nargs -eq 1 ]; }; then
        compopt -o filenames 2>/dev/null
        mapfile -t COMPREPLY < <(compgen -d -- "$cur")
    fi
}
complete -F _cbtfs cbtfs
