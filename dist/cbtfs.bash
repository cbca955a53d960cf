# bash completion for cbtfs: commands, each command's long options, file
# names for the options that take a file, directories for STORE and
# MOUNTPOINT.  Stands alone (no bash-completion helpers needed); `make
# install` puts it where bash-completion loads it on first use.

# The long options of COMMAND ($1); those that take a value end in "=".
_cbtfs_options ()
{
    local server="--server= --user= --password-file= --ca-file= --timeout="
    local common="--config= --help"
    case $1 in
        backup) echo "$server --vm= --exclude-disk= --jobs= --nbd-connections=
                      --limit-rate= --lock-wait= --no-copy --verify --quiet
                      --verbose" ;;
        mount) echo "$server --foreground --verbose --debug" ;;
        ls) echo "--json" ;;
        fetch) echo "$server --keep-data --nbd-connections= --quiet --verbose" ;;
        verify) echo "$server --accept= --quiet --verbose" ;;
        prune) echo "$server --keep-last= --keep-hourly= --keep-daily=
                     --keep-weekly= --keep-monthly= --keep-yearly=
                     --keep-within= --vm= --include-incomplete --dry-run
                     --json --lock-wait= --quiet --verbose" ;;
        forget) echo "$server --vm= --disk= --yes --json --lock-wait= --quiet
                      --verbose" ;;
        serve) echo "$server --listen= --unix= --tls-certificates= --pidfile=" ;;
        restore) echo "$server --sr= --vdi= --name= --json --quiet --verbose" ;;
        *) return ;;
    esac
    echo "$common"
}

_cbtfs ()
{
    local cur=${COMP_WORDS[COMP_CWORD]} prev=${COMP_WORDS[COMP_CWORD-1]}
    local cmd=${COMP_WORDS[1]-} i opt nargs=0
    COMPREPLY=()

    if [ "$COMP_CWORD" -eq 1 ]; then
        mapfile -t COMPREPLY < <(compgen -W "backup mount ls fetch verify
            prune forget serve restore --help --version" -- "$cur")
        return
    fi
    # --opt=VALUE: bash splits it at "=" (COMP_WORDBREAKS), --opt VALUE not.
    if [ "$cur" = "=" ]; then
        opt=$prev cur=''
    elif [ "$prev" = "=" ]; then
        opt=${COMP_WORDS[COMP_CWORD-2]}
    elif [[ $prev == --* ]] && [[ " $(_cbtfs_options "$cmd") " == *" $prev= "* ]]; then
        opt=$prev
    fi
    if [ -n "${opt-}" ]; then
        case $opt in
            --password-file|--ca-file|--config|--pidfile|--unix)
                compopt -o filenames 2>/dev/null
                mapfile -t COMPREPLY < <(compgen -f -- "$cur") ;;
            --tls-certificates)
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
    for ((i = 2; i < COMP_CWORD; i++)); do
        [[ ${COMP_WORDS[i]} == -* || ${COMP_WORDS[i]} == = ]] && continue
        [[ ${COMP_WORDS[i-1]} == = ]] && continue
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
