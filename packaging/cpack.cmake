# Debian packages, built with CPack from the install() rules:
#
#   evhost      (component runtime) evhostd, the plugins, the default
#               configuration (conffiles), the systemd units (the daemon;
#               the backup timer, off), man pages,
#               mail templates, documentation
#   evhost-dev  (component dev) SDK headers, evhost-sdk.pc, the CMake package
#               config, the example plugin's source
#
# Included at the end of the top-level CMakeLists.txt. Configure with
# -DCMAKE_INSTALL_PREFIX=/usr (packaging/build-debs does, with Debian's
# hardening flags), then `cpack -G DEB` in the build tree. The compiled-in
# defaults (configuration file, plugin and template directories) come from
# the prefix, so cpack refuses to package a build configured for another one.

set(EVHOST_PKG_SRC ${CMAKE_CURRENT_LIST_DIR})
set(EVHOST_PKG_BIN ${CMAKE_BINARY_DIR}/packaging)
set(EVHOST_DEB_RELEASE 1 CACHE STRING "Debian revision of the packages (VERSION-RELEASE)")
set(EVHOST_DEB_MAINTAINER "evhost maintainers <maintainers@evhost.example>"
    CACHE STRING "Maintainer field of the Debian packages")
set(EVHOST_DOC_DIR ${CMAKE_INSTALL_DATADIR}/doc/evhost)
set(EVHOST_DEV_DOC_DIR ${CMAKE_INSTALL_DATADIR}/doc/evhost-dev)
find_program(EVHOST_GZIP gzip REQUIRED)

# --- the systemd units ------------------------------------------------------
# The checked-in units name the paths of a /usr install, so they can be checked
# with systemd-analyze as they are; other prefixes get their own paths.
# Debian 12 keeps packaged units in /lib/systemd/system; other prefixes keep
# them under the prefix (systemd reads /usr/local/lib/systemd/system too).
if(CMAKE_INSTALL_PREFIX STREQUAL "/usr")
  set(EVHOST_UNIT_DIR /lib/systemd/system)
else()
  set(EVHOST_UNIT_DIR lib/systemd/system)
endif()
foreach(unit evhostd.service evhost-backup.service evhost-backup.timer)
  file(READ ${EVHOST_PKG_SRC}/systemd/${unit} evhost_unit)
  string(REPLACE "/usr/sbin/evhostd" "${CMAKE_INSTALL_FULL_SBINDIR}/evhostd" evhost_unit
         "${evhost_unit}")
  string(REPLACE "/usr/bin/evhostctl" "${CMAKE_INSTALL_FULL_BINDIR}/evhostctl" evhost_unit
         "${evhost_unit}")
  string(REPLACE "/etc/evhost/evhost.conf" "${CMAKE_INSTALL_FULL_SYSCONFDIR}/evhost/evhost.conf"
         evhost_unit "${evhost_unit}")
  file(CONFIGURE OUTPUT ${EVHOST_PKG_BIN}/${unit} CONTENT "${evhost_unit}" @ONLY)
  set_property(DIRECTORY APPEND PROPERTY CMAKE_CONFIGURE_DEPENDS ${EVHOST_PKG_SRC}/systemd/${unit})
  install(FILES ${EVHOST_PKG_BIN}/${unit} DESTINATION ${EVHOST_UNIT_DIR} COMPONENT runtime)
endforeach()

# --- compressed man pages and documents (Debian policy 12.1, 12.3) ----------
set(evhost_gz_outputs)
# evhost_gzip(SRC OUT): OUT (ending in .gz) made from SRC with gzip -9n (no
# name or timestamp inside, so rebuilding gives the same bytes).
function(evhost_gzip src out)
  string(REGEX REPLACE "\\.gz$" "" plain ${out})
  set(copy)
  if(NOT plain STREQUAL src)
    set(copy COMMAND ${CMAKE_COMMAND} -E copy ${src} ${plain})
  endif()
  add_custom_command(OUTPUT ${out} ${copy}
    COMMAND ${EVHOST_GZIP} -9nkf ${plain}
    DEPENDS ${src} VERBATIM)
  set(evhost_gz_outputs ${evhost_gz_outputs} ${out} PARENT_SCOPE)
endfunction()

foreach(page evhostd.8 evhost.conf.5 evhostctl.1)
  configure_file(${EVHOST_PKG_SRC}/man/${page} ${EVHOST_PKG_BIN}/man/${page} @ONLY)
  evhost_gzip(${EVHOST_PKG_BIN}/man/${page} ${EVHOST_PKG_BIN}/man/${page}.gz)
  string(REGEX REPLACE ".*\\.([0-9])$" "\\1" section ${page})
  install(FILES ${EVHOST_PKG_BIN}/man/${page}.gz
          DESTINATION ${CMAKE_INSTALL_MANDIR}/man${section} COMPONENT runtime)
endforeach()

# The changelog names this version; cpack checks that (see cpack-config.cmake).
configure_file(${EVHOST_PKG_SRC}/debian/changelog ${EVHOST_PKG_BIN}/changelog.Debian COPYONLY)
evhost_gzip(${EVHOST_PKG_BIN}/changelog.Debian ${EVHOST_PKG_BIN}/changelog.Debian.gz)
foreach(doc configuration operations services architecture migration)
  evhost_gzip(${CMAKE_SOURCE_DIR}/docs/${doc}.md ${EVHOST_PKG_BIN}/doc/${doc}.md.gz)
  install(FILES ${EVHOST_PKG_BIN}/doc/${doc}.md.gz DESTINATION ${EVHOST_DOC_DIR}
          COMPONENT runtime)
endforeach()
evhost_gzip(${CMAKE_SOURCE_DIR}/docs/sdk.md ${EVHOST_PKG_BIN}/doc/sdk.md.gz)
install(FILES ${EVHOST_PKG_BIN}/doc/sdk.md.gz DESTINATION ${EVHOST_DEV_DOC_DIR} COMPONENT dev)
file(MAKE_DIRECTORY ${EVHOST_PKG_BIN}/doc)
add_custom_target(evhost_package_files ALL DEPENDS ${evhost_gz_outputs})

# --- the Grafana dashboard (docs/operations.md, "Metrics") --------------------
install(FILES ${EVHOST_PKG_SRC}/grafana/evhost.json
        DESTINATION ${CMAKE_INSTALL_DATADIR}/evhost/grafana COMPONENT runtime)
# --- Prometheus alerting rules (docs/operations.md, "Alerts") -----------------
install(FILES ${EVHOST_PKG_SRC}/prometheus/evhost-alerts.yml
        DESTINATION ${CMAKE_INSTALL_DATADIR}/evhost/prometheus COMPONENT runtime)

foreach(comp_doc runtime:${EVHOST_DOC_DIR} dev:${EVHOST_DEV_DOC_DIR})
  string(REPLACE ":" ";" comp_doc "${comp_doc}")
  list(GET comp_doc 0 comp)
  list(GET comp_doc 1 dir)
  install(FILES ${EVHOST_PKG_SRC}/debian/copyright ${EVHOST_PKG_BIN}/changelog.Debian.gz
          DESTINATION ${dir} COMPONENT ${comp})
endforeach()

# --- maintainer scripts and conffiles ----------------------------------------
file(GLOB evhost_dropins CONFIGURE_DEPENDS RELATIVE ${CMAKE_SOURCE_DIR}/conf.d
     ${CMAKE_SOURCE_DIR}/conf.d/[0-9]*.conf)
list(SORT evhost_dropins)
set(evhost_conffiles "${CMAKE_INSTALL_FULL_SYSCONFDIR}/evhost/evhost.conf\n")
foreach(f ${evhost_dropins})
  string(APPEND evhost_conffiles "${CMAKE_INSTALL_FULL_SYSCONFDIR}/evhost/conf.d/${f}\n")
endforeach()
file(CONFIGURE OUTPUT ${EVHOST_PKG_BIN}/debian/conffiles CONTENT "${evhost_conffiles}")
foreach(script postinst prerm postrm)
  configure_file(${EVHOST_PKG_SRC}/debian/${script} ${EVHOST_PKG_BIN}/debian/${script} COPYONLY)
endforeach()

# --- CPack --------------------------------------------------------------------
set(CPACK_GENERATOR DEB)
set(CPACK_PACKAGE_NAME evhost)
set(CPACK_PACKAGE_VENDOR "evhost")
set(CPACK_PACKAGE_VERSION ${PROJECT_VERSION})
set(CPACK_PACKAGE_CONTACT "${EVHOST_DEB_MAINTAINER}")
set(CPACK_PACKAGING_INSTALL_PREFIX ${CMAKE_INSTALL_PREFIX})
# Absolute destinations (/etc/evhost, /lib/systemd/system) land in the staging
# tree instead of the build machine's /etc.
set(CPACK_SET_DESTDIR ON)
set(CPACK_STRIP_FILES ON)
set(CPACK_PACKAGE_DIRECTORY ${CMAKE_BINARY_DIR}/deb)
set(CPACK_COMPONENTS_ALL runtime dev)
set(CPACK_DEB_COMPONENT_INSTALL ON)
set(CPACK_PROJECT_CONFIG_FILE ${EVHOST_PKG_BIN}/cpack-config.cmake)
set(EVHOST_CHANGELOG ${EVHOST_PKG_SRC}/debian/changelog)
configure_file(${EVHOST_PKG_SRC}/cpack-config.cmake.in ${EVHOST_PKG_BIN}/cpack-config.cmake @ONLY)

set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)
set(CPACK_DEBIAN_PACKAGE_RELEASE ${EVHOST_DEB_RELEASE})
set(CPACK_DEBIAN_PACKAGE_MAINTAINER "${EVHOST_DEB_MAINTAINER}")
set(CPACK_DEBIAN_PACKAGE_PRIORITY optional)
set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS ON)
set(CPACK_DEBIAN_PACKAGE_CONTROL_STRICT_PERMISSION ON)

set(CPACK_DEBIAN_RUNTIME_PACKAGE_NAME evhost)
set(CPACK_DEBIAN_RUNTIME_PACKAGE_SECTION net)
# adduser: postinst creates the system user. Libraries: dpkg-shlibdeps.
set(CPACK_DEBIAN_RUNTIME_PACKAGE_DEPENDS "adduser")
# The system's CA certificates: what TLS to a collector ([tracing]
# otlp_endpoint = https://...), an SMTP server or a Kafka broker verifies
# against unless a CA file is configured.
set(CPACK_DEBIAN_RUNTIME_PACKAGE_RECOMMENDS "ca-certificates")
set(CPACK_COMPONENT_RUNTIME_DESCRIPTION
"event-driven service plugins on Apache Kafka
evhostd hosts service plugins (shared objects named in INI configuration)
and gives them HTTP routes, Kafka consumers with retries and dead-letter
topics, durable event publishing through a transactional outbox, and one
SQLite database each.
.
This package contains the daemon with its systemd unit (and a daily backup
timer, off until enabled) and three plugins:
user (accounts and login), crud (JSON document collections) and
notifications (welcome and broadcast mails over SMTP or to a Maildir).")
set(CPACK_DEBIAN_RUNTIME_PACKAGE_CONTROL_EXTRA
    ${EVHOST_PKG_BIN}/debian/conffiles ${EVHOST_PKG_BIN}/debian/postinst
    ${EVHOST_PKG_BIN}/debian/prerm ${EVHOST_PKG_BIN}/debian/postrm)

set(CPACK_DEBIAN_DEV_PACKAGE_NAME evhost-dev)
set(CPACK_DEBIAN_DEV_PACKAGE_SECTION devel)
# Plugins built with these headers are loaded by the daemon.
set(CPACK_DEBIAN_DEV_PACKAGE_RECOMMENDS "evhost (>= ${PROJECT_VERSION}), pkg-config")
set(CPACK_COMPONENT_DEV_DESCRIPTION
"SDK for writing evhost service plugins
evhostd hosts service plugins with HTTP routes, Kafka consumers, durable
event publishing and per-plugin SQLite storage.
.
This package contains the plugin SDK headers (ABI v1), a pkg-config file
(evhost-sdk), a CMake package configuration (evhost::sdk) and the source of
an example plugin.")

include(CPack)
