# Run by `cmake --install` (install(SCRIPT) in the top CMakeLists.txt): the
# configuration files, which are the admin's once installed.
#
# A file not there yet is installed. One the same as shipped is left alone. One
# that differs (edited, or shipped by an older version) is kept, the shipped one
# is put beside it as FILE.dist, and a line says so: evhostd never reads it
# (conf.d takes *.conf only), and a second `cmake --install` must not turn a
# service the admin disabled in its drop-in back on, nor undo evhost.conf. The
# Debian packages install into an empty staging tree, so every file is new
# there; dpkg's conffiles keep the admin's edits on an upgrade.
#
# In: EVHOST_CONF_SRC, the source conf.d; EVHOST_CONF_DEST, the configuration
# directory (absolute, or relative to the install prefix).

if(IS_ABSOLUTE "${EVHOST_CONF_DEST}")
  set(_evh_dest "${EVHOST_CONF_DEST}")
else()
  set(_evh_dest "${CMAKE_INSTALL_PREFIX}/${EVHOST_CONF_DEST}")
endif()

# `src` into directory `dir` (without DESTDIR: file(INSTALL) adds it).
function(_evh_install_conf src dir)
  get_filename_component(name "${src}" NAME)
  set(there "$ENV{DESTDIR}${dir}/${name}")
  if(NOT EXISTS "${there}")
    file(INSTALL "${src}" DESTINATION "${dir}")
    return()
  endif()
  file(SHA256 "${src}" shipped)
  file(SHA256 "${there}" installed)
  if(shipped STREQUAL installed)
    message(STATUS "Up-to-date: ${there}")
    return()
  endif()
  file(INSTALL "${src}" DESTINATION "${dir}" RENAME "${name}.dist")
  message(STATUS "Keeping: ${there}: it differs from the one this version ships, which "
                 "is installed beside it as ${name}.dist (never read: merge what you want "
                 "of it by hand)")
endfunction()

_evh_install_conf("${EVHOST_CONF_SRC}/evhost.conf" "${_evh_dest}")
file(GLOB _evh_dropins "${EVHOST_CONF_SRC}/[0-9]*.conf")
list(SORT _evh_dropins)
foreach(_evh_f IN LISTS _evh_dropins)
  _evh_install_conf("${_evh_f}" "${_evh_dest}/conf.d")
endforeach()
